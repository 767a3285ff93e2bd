namespace GaugeTorch.Gauge.Canonical;

/// <summary>Which canonical form: GAUGE.md §5 (<see cref="Full"/>) or the papers' weaker form (<see cref="Paper"/>).</summary>
public enum CanonicalFormKind
{
    /// <summary>Steps 1–8 of GAUGE.md §5: unique on the orbit of every family of the catalog.</summary>
    Full,
    /// <summary>Steps 5–8 only (biases as extra rows, orthonormal W_V): unique on orbits of families 1–3.</summary>
    Paper,
}

public static class CanonicalFormKinds
{
    public static string Name(this CanonicalFormKind k) => k == CanonicalFormKind.Full ? "full" : "paper";

    public static CanonicalFormKind Parse(string s) => s.Trim().ToLowerInvariant() switch
    {
        "full" => CanonicalFormKind.Full,
        "paper" => CanonicalFormKind.Paper,
        _ => throw new ArgumentException($"--form: '{s}' is not 'full' or 'paper'"),
    };
}

/// <summary>
/// The gauge-invariant fingerprint of one head: the singular values of its QK composite
/// <c>W̃_Q W̃_Kᵀ</c> and of its VO composite <c>W̃_V W_O</c>, descending (values below the rank tolerance are 0).
/// </summary>
public sealed record HeadFingerprint(int OriginalIndex, double[] QkSingularValues, double[] VoSingularValues)
{
    public double QkSum => QkSingularValues.Sum();
    public double VoSum => VoSingularValues.Sum();
}

/// <summary>
/// What canonicalizing one layer found. "Near-degenerate" singular values and "near-tied" heads or MLP units
/// (relative gap below <see cref="CanonicalForm.GapTolerance"/>) are the places where the form is unique only up
/// to the residual freedom they leave; singular values below the rank tolerance are set to exactly 0 (their
/// factors become zero columns), which is unique.
/// </summary>
public sealed class LayerReport
{
    public int Layer { get; init; }
    /// <summary>Adjacent pairs of non-zero QK singular values (any head) with relative gap below the tolerance.</summary>
    public int QkNearDegenerate { get; set; }
    /// <summary>Same for the VO composites.</summary>
    public int VoNearDegenerate { get; set; }
    /// <summary>QK singular values set to 0 (below the rank tolerance), over all heads.</summary>
    public int QkZeroed { get; set; }
    /// <summary>VO singular values set to 0 (below the rank tolerance), over all heads.</summary>
    public int VoZeroed { get; set; }
    /// <summary>Per-head factors (W̃_Q, W_K, W_V or W_Oᵀ) too ill-conditioned for the Gram/Cholesky square root, which used Householder QR instead.</summary>
    public int HouseholderFallbacks { get; set; }
    /// <summary>Adjacent heads (in canonical order) whose sort keys tie within the tolerance.</summary>
    public int NearTiedHeads { get; set; }
    /// <summary>Adjacent MLP units (in canonical order) whose sort keys tie within the tolerance.</summary>
    public int NearTiedUnits { get; set; }
    /// <summary>Canonical position → original head index.</summary>
    public int[] HeadOrder { get; set; } = [];
    /// <summary>Canonical position → original MLP unit index.</summary>
    public int[] UnitOrder { get; set; } = [];
    /// <summary>Fingerprints in canonical head order.</summary>
    public HeadFingerprint[] Heads { get; set; } = [];
    /// <summary>Human-readable details of every degeneracy and tie (capped).</summary>
    public List<string> Notes { get; } = [];

    public bool Clean => QkNearDegenerate + VoNearDegenerate + NearTiedHeads + NearTiedUnits == 0;

    internal void Note(string s)
    {
        if (Notes.Count < 50) Notes.Add(s);
    }
}

/// <summary>The report of canonicalizing a whole checkpoint.</summary>
public sealed class CanonicalReport
{
    public CanonicalFormKind Form { get; init; }
    public List<LayerReport> Layers { get; } = [];
    /// <summary>Notes about the global tensors (wte, wpe, ln_f, lm_head).</summary>
    public List<string> GlobalNotes { get; } = [];

    /// <summary>
    /// Relative Frobenius error of the row-centred logits (float64) of the canonical checkpoint as stored (after
    /// rounding to the storage dtype) against the original model, on the built-in text; null until measured.
    /// </summary>
    public double? StorageLogitsError { get; set; }

    public int QkNearDegenerate => Layers.Sum(l => l.QkNearDegenerate);
    public int VoNearDegenerate => Layers.Sum(l => l.VoNearDegenerate);
    public int NearDegenerate => QkNearDegenerate + VoNearDegenerate;
    public int Zeroed => Layers.Sum(l => l.QkZeroed + l.VoZeroed);
    public int NearTiedHeads => Layers.Sum(l => l.NearTiedHeads);
    public int NearTiedUnits => Layers.Sum(l => l.NearTiedUnits);
    public int HouseholderFallbacks => Layers.Sum(l => l.HouseholderFallbacks);
    public bool Clean => Layers.All(l => l.Clean);
}
