using GaugeTorch.SafeTensors;

namespace GaugeTorch.Canonical.Llama;

/// <summary>
/// The precision the LLaMA-family canonical form works to (as GPT-2's <c>CanonicalPrecision</c>, same rules): decisions
/// (sort keys, signs) tie at the float64 tolerance 1e-8; near-ties are reported at max(1e-8, 16u) of the coarser of the
/// input and output storage dtypes, since there one storage rounding could reverse a decision.
/// </summary>
public sealed record LlamaCanonicalPrecision
{
    /// <summary>Relative gap below which two sort keys count as tied (the decision then uses the next key).</summary>
    public const double SortTolerance = 1e-8;

    /// <summary>Relative singular value below which a VO composite direction is set to exactly 0 (its vectors are arbitrary there).</summary>
    public const double RankTolerance = 1e-13;

    public DType Storage { get; init; } = DType.F64;

    /// <summary>
    /// Keep an input layer (or the globals) that is already canonical within one storage rounding (<see cref="Check"/>, <see cref="Noise"/>) as stored, so that
    /// canonicalizing a canonical export reproduces its bytes; measurements of the float64 arithmetic turn it off.
    /// </summary>
    public bool KeepCanonicalInput { get; init; } = true;

    public static LlamaCanonicalPrecision Float64 { get; } = new() { KeepCanonicalInput = false };

    public static LlamaCanonicalPrecision For(DType input, DType output) =>
        new() { Storage = UnitRoundoff(input) >= UnitRoundoff(output) ? input : output };

    public static double UnitRoundoff(DType t) => t.UnitRoundoff();

    public double Unit => UnitRoundoff(Storage);

    /// <summary>Near-tie threshold of the reports: max(1e-8, 16u).</summary>
    public double Tie => Math.Max(SortTolerance, 16 * Unit);

    /// <summary>
    /// Relative tolerance of the form's conditions (balanced planes, diagonal Gram matrices, balanced units, unit gains) on
    /// an input that is already canonical: 8u + 1e-12 (rounding a canonical tensor breaks them by at most ~3u).
    /// </summary>
    public double Check => 8 * Unit + 1e-12;

    /// <summary>How far one storage rounding can move a relative key or sign-rule margin: 4u + 1e-12.</summary>
    public double Noise => 4 * Unit + 1e-12;
}

/// <summary>What canonicalizing one layer found (counts over the layer's groups, heads, planes and units).</summary>
public sealed class LlamaLayerReport
{
    public int Layer { get; init; }
    /// <summary>QK planes whose Σ_t K_t² is ~0 relative to |K|²: the phase of the plane is not fixed by the data.</summary>
    public int QkPhaseDegenerate { get; set; }
    /// <summary>QK planes whose sign rule is decided by a near-tie of the two largest |Re K_t|.</summary>
    public int QkSignTies { get; set; }
    /// <summary>QK planes with a zero query or key side (left as they are).</summary>
    public int QkZeroPlanes { get; set; }
    /// <summary>Adjacent non-zero VO singular values (any group) with relative gap below the tie tolerance.</summary>
    public int VoNearDegenerate { get; set; }
    /// <summary>VO singular values set to 0 (below the rank tolerance).</summary>
    public int VoZeroed { get; set; }
    /// <summary>Adjacent query heads (within a group) whose sort keys tie.</summary>
    public int NearTiedHeads { get; set; }
    /// <summary>Adjacent KV groups whose sort keys tie.</summary>
    public int NearTiedGroups { get; set; }
    /// <summary>Adjacent MLP units whose sort keys tie.</summary>
    public int NearTiedUnits { get; set; }
    /// <summary>Sign rules (VO columns, MLP units) decided by a near-tie of the two largest magnitudes.</summary>
    public int NearTiedSigns { get; set; }
    /// <summary>KV groups whose VO factors were too ill-conditioned for the Gram/Cholesky square root and used Householder QR.</summary>
    public int HouseholderFallbacks { get; set; }
    /// <summary>Zero MLP units (up or down all zero), left unscaled.</summary>
    public int ZeroUnits { get; set; }
    /// <summary>The input layer was already canonical within the storage precision and was kept as stored.</summary>
    public bool Kept { get; set; }
    /// <summary>Canonical position → original query head.</summary>
    public int[] HeadOrder { get; set; } = [];
    /// <summary>Canonical position → original KV group.</summary>
    public int[] GroupOrder { get; set; } = [];
    /// <summary>Per canonical group, the singular values of its VO composite (gauge-invariant fingerprints).</summary>
    public double[][] VoSingularValues { get; set; } = [];

    /// <summary>Copies every count and order of <paramref name="o"/>.</summary>
    public void Assign(LlamaLayerReport o)
    {
        QkPhaseDegenerate = o.QkPhaseDegenerate; QkSignTies = o.QkSignTies; QkZeroPlanes = o.QkZeroPlanes; VoNearDegenerate = o.VoNearDegenerate;
        VoZeroed = o.VoZeroed; NearTiedHeads = o.NearTiedHeads; NearTiedGroups = o.NearTiedGroups; NearTiedUnits = o.NearTiedUnits;
        NearTiedSigns = o.NearTiedSigns; HouseholderFallbacks = o.HouseholderFallbacks; ZeroUnits = o.ZeroUnits; Kept = o.Kept; HeadOrder = o.HeadOrder; GroupOrder = o.GroupOrder; VoSingularValues = o.VoSingularValues;
    }

    public int NearTies => QkPhaseDegenerate + QkSignTies + VoNearDegenerate + NearTiedHeads + NearTiedGroups + NearTiedUnits + NearTiedSigns;
}

/// <summary>The residual frame of step 2 and what it found.</summary>
public sealed class LlamaFrameReport
{
    /// <summary>"signed-permutation" (tied head) or "rotation" (untied head).</summary>
    public string Kind { get; set; } = "";
    /// <summary>The frame is the identity (or the globals were kept as stored).</summary>
    public bool Identity { get; set; }
    /// <summary>The globals were already canonical within the storage precision and kept as stored.</summary>
    public bool Kept { get; set; }
    /// <summary>Tied: adjacent g_f entries that tie (then ordered by the embedding column norms).</summary>
    public int GainTies { get; set; }
    /// <summary>Tied: ties of both g_f and the embedding column norm (the order there is residual freedom).</summary>
    public int GainTiesUnbroken { get; set; }
    /// <summary>Near-tied sign rules (embedding columns, or U columns of the untied SVD).</summary>
    public int NearTiedSigns { get; set; }
    /// <summary>Untied: adjacent singular values of the embedding with relative gap below the tie tolerance.</summary>
    public int EmbeddingNearDegenerate { get; set; }
}

/// <summary>The report of one canonicalization.</summary>
public sealed class LlamaCanonicalReport
{
    public LlamaCanonicalPrecision Precision { get; init; } = LlamaCanonicalPrecision.Float64;
    public LlamaFrameReport Frame { get; } = new();
    public List<LlamaLayerReport> Layers { get; } = [];
    /// <summary>Relative error of the row-centred logits of the export as stored against the input (null: not measured).</summary>
    public double? StorageLogitsError { get; set; }
    /// <summary>Tokens of that measurement.</summary>
    public int Tokens { get; set; }

    public int KeptLayers => Layers.Count(l => l.Kept);
    public int NearTies => Layers.Sum(l => l.NearTies) + Frame.GainTiesUnbroken + Frame.NearTiedSigns + Frame.EmbeddingNearDegenerate;
    /// <summary>No near-tie or degeneracy anywhere: the form is unique on this input's orbit.</summary>
    public bool Clean => NearTies == 0;
}
