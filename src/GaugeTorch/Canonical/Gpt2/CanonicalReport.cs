namespace GaugeTorch.Canonical.Gpt2;

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
    /// <summary>
    /// Adjacent MLP units (in canonical order) whose sort keys tie within the tolerance, which scales with the storage
    /// precision (<see cref="CanonicalPrecision.Tie"/>): there rounding alone could swap the keys, so the units are
    /// ordered by their canonical data instead.
    /// </summary>
    public int NearTiedUnits { get; set; }
    /// <summary>Singular-vector columns whose two extreme entries tie in magnitude within the tolerance (sign from the third moment).</summary>
    public int NearTiedSigns { get; set; }
    /// <summary>Ties that no rule of the form could break (heads or units equal on keys and data, signs tied on every rule): real residual freedom.</summary>
    public int UnbrokenTies { get; set; }
    /// <summary>The layer was already canonical within its storage precision and its values were kept as stored.</summary>
    public bool Kept { get; set; }
    /// <summary>Canonical position → original head index.</summary>
    public int[] HeadOrder { get; set; } = [];
    /// <summary>Canonical position → original MLP unit index.</summary>
    public int[] UnitOrder { get; set; } = [];
    /// <summary>Fingerprints in canonical head order.</summary>
    public HeadFingerprint[] Heads { get; set; } = [];
    /// <summary>Human-readable details of every degeneracy and tie (capped).</summary>
    public List<string> Notes { get; } = [];

    public bool Clean => QkNearDegenerate + VoNearDegenerate + NearTiedHeads + NearTiedUnits + NearTiedSigns + UnbrokenTies == 0;

    internal void Note(string s)
    {
        if (Notes.Count < 50) Notes.Add(s);
    }
}

/// <summary>
/// What step 4b (GAUGE.md §5) found when it fixed the residual frame, and the residual freedom it leaves: ties in
/// γ_f and a zero (or sign-symmetric) β_f for a tied head; near-degenerate or zero singular values of the embedding
/// for an untied head.
/// </summary>
public sealed class ResidualFrameReport
{
    /// <summary>"permutation" (tied head: residual coordinates sorted by γ_f, global sign from β_f), "rotation" (untied head: principal axes of wte) or "none" (paper form).</summary>
    public string Kind { get; set; } = "none";
    /// <summary>Whether the frame is the identity (nothing moved).</summary>
    public bool Identity { get; set; } = true;
    /// <summary>The global sign σ applied to the residual stream (tied head).</summary>
    public double Sign { get; set; } = 1;
    /// <summary>Canonical coordinate j ← original coordinate Permutation[j] (tied head).</summary>
    public int[] Permutation { get; set; } = [];
    /// <summary>Adjacent pairs of canonical coordinates with exactly equal γ_f (ordered by β_f, then wte column norms).</summary>
    public int GammaTies { get; set; }
    /// <summary>Of those, pairs equal in β_f too and within the tie tolerance on the wte and wpe column norms (ordered by the wte columns' data).</summary>
    public int GammaTiesByData { get; set; }
    /// <summary>Pairs no rule could order (equal γ_f, β_f and wte/wpe columns): real residual freedom.</summary>
    public int GammaTiesUnbroken { get; set; }
    /// <summary>β_f is zero or sign-symmetric, so the global sign was taken from the third moment of wte (reported as residual freedom).</summary>
    public bool BetaZero { get; set; }
    /// <summary>Untied head: non-zero singular values of the row-centred wte (d − 1 when it has full rank).</summary>
    public int EmbeddingRank { get; set; }
    /// <summary>Untied head: adjacent singular values of wte closer than the tie tolerance (the axes may rotate inside their span).</summary>
    public int EmbeddingNearDegenerate { get; set; }
    /// <summary>Untied head: singular vectors whose sign rule was a near-tie.</summary>
    public int EmbeddingNearTiedSigns { get; set; }
    /// <summary>The global tensors were already canonical within storage precision and were kept as stored.</summary>
    public bool Kept { get; set; }

    /// <summary>d, the width of the residual stream.</summary>
    public int Dimension { get; set; }

    public bool Clean => GammaTiesByData + GammaTiesUnbroken + EmbeddingNearDegenerate + EmbeddingNearTiedSigns == 0 && !BetaZero
                         && (Kind != "rotation" || EmbeddingRank >= Dimension - 1);
}

/// <summary>The report of canonicalizing a whole checkpoint.</summary>
public sealed class CanonicalReport
{
    public CanonicalFormKind Form { get; init; }
    /// <summary>The precision whose rounding the tie thresholds cover.</summary>
    public CanonicalPrecision Precision { get; set; } = CanonicalPrecision.Float64;
    public List<LayerReport> Layers { get; } = [];
    /// <summary>Step 4b: the residual frame and the residual freedom it leaves.</summary>
    public ResidualFrameReport Frame { get; } = new();
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
    public int NearTiedSigns => Layers.Sum(l => l.NearTiedSigns);
    public int UnbrokenTies => Layers.Sum(l => l.UnbrokenTies) + Frame.GammaTiesUnbroken;
    public int KeptLayers => Layers.Count(l => l.Kept);
    public bool Clean => Layers.All(l => l.Clean) && Frame.Clean;
}
