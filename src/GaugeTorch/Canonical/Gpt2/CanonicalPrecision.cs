using GaugeTorch.SafeTensors;

namespace GaugeTorch.Canonical.Gpt2;

/// <summary>
/// The precision the canonical form works to: that of the coarser of the input's storage dtype and the output's.
/// Storage rounding moves every sort key, singular value and sign rule of the form by up to a few units of that
/// dtype's roundoff, so the near-tie thresholds scale with it (issue 11 item 6): an F32 export moves a c_fc column
/// norm by ~1e-7, far above the float64 tie tolerance of 1e-8, and on gpt2 shapes that was enough to swap two MLP
/// units when an export was canonicalized again, with no tie reported.
/// <para>Tolerances are relative (to the largest value of the quantity compared). The form decides at
/// <see cref="Sort"/>, reports near-ties at <see cref="Tie"/>, and accepts an input as already canonical when some
/// values within <see cref="Noise"/> of the stored ones would give the stored orders and signs (so every export is
/// accepted however close a decision was).</para>
/// </summary>
public sealed record CanonicalPrecision
{
    /// <summary>The dtype whose rounding the thresholds cover (F64 for float64 work in memory).</summary>
    public DType Storage { get; init; } = DType.F64;

    /// <summary>
    /// Recognise an input that is already canonical within <see cref="Condition"/> (every condition of the form holds,
    /// every order and sign is admissible, the residual frame is the identity) and keep its values instead of
    /// recomputing them: re-rounding a float64 recomputation would change some last bits, so canonical files could
    /// not be hashed. On by default; measurements of the float64 arithmetic itself (idempotence) turn it off.
    /// </summary>
    public bool KeepCanonicalInput { get; init; } = true;

    public static CanonicalPrecision Float64 { get; } = new();

    /// <summary>The coarser of two dtypes (the one with the larger roundoff).</summary>
    public static CanonicalPrecision For(DType input, DType output) =>
        new() { Storage = UnitRoundoff(input) >= UnitRoundoff(output) ? input : output };

    /// <summary>Unit roundoff u (half an ulp at 1): 2⁻⁵³ F64, 2⁻²⁴ F32, 2⁻¹¹ F16, 2⁻⁸ BF16.</summary>
    public static double UnitRoundoff(DType t) => t.UnitRoundoff();

    /// <summary>Half the spacing of the subnormals of a dtype (the absolute rounding error below its smallest normal).</summary>
    public static double SubnormalHalfSpacing(DType t) => t switch
    {
        DType.F64 => Math.Pow(2, -1075),
        DType.F32 => Math.Pow(2, -150),
        DType.F16 => Math.Pow(2, -25),
        DType.BF16 => Math.Pow(2, -134),
        _ => throw new NotSupportedException($"dtype {t} is not a floating-point parameter dtype"),
    };

    public double Unit => UnitRoundoff(Storage);

    /// <summary>Absolute rounding error of values in the subnormal range of <see cref="Storage"/>.</summary>
    public double Absolute => SubnormalHalfSpacing(Storage);

    /// <summary>
    /// Relative tolerance of the form's own decisions (sort keys, sign rules): the float64 gap tolerance 1e-8 at
    /// every precision. The decisions must be a consistent function of the values, so that every point of an orbit
    /// sorts alike; a tolerance scaled to F16 (≈1e-2) would tie most MLP units of a layer with their neighbours in
    /// chains (measured on the demo model) and make the order depend on the input's order.
    /// </summary>
    public double Sort => CanonicalForm.GapTolerance;

    /// <summary>
    /// Near-tie threshold of the reports, which scales with the storage dtype: a decision whose margin (the relative
    /// difference of the key that decided it) is below this could be reversed by storage rounding alone, so it is
    /// reported. The float64 gap tolerance 1e-8, or 16u when larger (F32 9.5e-7, F16 7.8e-3, BF16 6.3e-2).
    /// </summary>
    public double Tie => Math.Max(CanonicalForm.GapTolerance, 16 * Unit);

    /// <summary>
    /// How far one storage rounding can move a relative key of the form (a column norm, a bias, a singular value
    /// relative to the largest, a sign-rule margin): 4u, plus 1e-12 for the float64 arithmetic. Used to decide
    /// whether a stored order is one the form could have produced from values within that distance.
    /// </summary>
    public double Noise => 4 * Unit + 1e-12;

    /// <summary>
    /// Relative tolerance of the conditions of the form (centring, balanced Gram matrices) on an input that is already
    /// canonical: 8u of the storage dtype (rounding a canonical tensor breaks them by at most ~3u) plus 1e-12 for the
    /// float64 computation of the form itself (its idempotence error is ~1e-13 on gpt2 shapes).
    /// </summary>
    public double Condition => 8 * Unit + 1e-12;
}
