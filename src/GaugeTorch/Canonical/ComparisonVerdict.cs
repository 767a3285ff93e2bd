using GaugeTorch.SafeTensors;

namespace GaugeTorch.Canonical;

/// <summary>
/// What every architecture's compare decides, and by one rule: the canonical forms of A and B agree within a weight
/// tolerance and their row-centred logits within a function tolerance, both derived from the measured rounding of the
/// two inputs (<see cref="RoundingSafety"/> × (rounding of A + rounding of B), with float64 floors) unless a tolerance
/// is given. Each architecture's result adds its per-layer distances and says where the largest one is.
/// </summary>
public abstract class ComparisonVerdict
{
    /// <summary>
    /// Tolerance = this × (measured rounding of A + of B), for the weights and for the function alike. Measured
    /// (docs/canonical-form.md): the trained F16 demo model against a random gauge transform of itself stored in F16
    /// is at 0.64× the sum in weights and 0.23× in logits, while a 2 % change of layer 0's c_fc is 25× the sum in
    /// weights and 8× in logits (layer 1's: 26× and 3.7×); F32 test fixtures against their transforms are at
    /// 0.4–1.2× the sum in weights.
    /// </summary>
    public const double RoundingSafety = 4;

    /// <summary>The smallest weight tolerance: the float64 canonical form's own uniqueness bound, for F64 inputs whose rounding is 0.</summary>
    public const double Float64WeightFloor = 1e-9;

    /// <summary>The smallest function tolerance: 100 ε_F64, the bound a gauge transform must meet in float64.</summary>
    public static readonly double Float64FunctionFloor = 100 * Math.Pow(2, -52);

    /// <summary>Global tensors (embedding, positions, final norm, head): relative distances, by tensor name.</summary>
    public Dictionary<string, double> Globals { get; } = new(StringComparer.Ordinal);

    /// <summary>"tied" or "untied": the canonical form both were brought to (untied when either head is).</summary>
    public string HeadForm { get; set; } = "tied";

    /// <summary>The largest per-layer distance (0 without layers).</summary>
    protected abstract double LargestInLayers { get; }

    /// <summary>The largest distance over layers and globals.</summary>
    public double Largest => Math.Max(LargestInLayers, Globals.Count == 0 ? 0 : Globals.Values.Max());

    /// <summary>
    /// The measured rounding of each input: the largest distance (the same measures as <see cref="Largest"/>) between
    /// its float64 canonical form and the canonical form of that form rounded to the input's storage dtype. ~1e-15
    /// for F64 inputs.
    /// </summary>
    public double RoundingA { get; set; }
    public double RoundingB { get; set; }
    /// <summary>The tolerance on <see cref="Largest"/> the verdict used.</summary>
    public double Tolerance { get; set; }
    /// <summary>How <see cref="Tolerance"/> was obtained, in words.</summary>
    public string ToleranceBasis { get; set; } = "";

    /// <summary>Tokens of the function comparison (0: not compared).</summary>
    public int FunctionTokens { get; set; }
    /// <summary>‖Y_A − Y_B‖_F / ‖Y_A‖_F of the row-centred logits (float64), null when not compared.</summary>
    public double? FunctionDistance { get; set; }
    /// <summary>
    /// Measured function rounding of each input: the same distance between the input and the input with every stored
    /// value moved by a random relative error uniform in ±u (u the unit roundoff of its storage dtype).
    /// </summary>
    public double? FunctionRoundingA { get; set; }
    public double? FunctionRoundingB { get; set; }
    public double? FunctionTolerance { get; set; }
    public string FunctionToleranceBasis { get; set; } = "";

    public bool WeightsEquivalent => Largest <= Tolerance;
    public bool FunctionEquivalent => FunctionDistance is not double f || f <= FunctionTolerance;
    /// <summary>The verdict: equivalent up to gauge when the canonical forms agree within the tolerance and the function does too.</summary>
    public bool Equivalent => WeightsEquivalent && FunctionEquivalent;

    /// <summary>Records the measured weight roundings and sets the weight tolerance: <paramref name="given"/>, else derived from them.</summary>
    public void SetWeightTolerance(double? given, double roundA, DType storageA, double roundB, DType storageB)
    {
        RoundingA = roundA;
        RoundingB = roundB;
        if (given is double g)
        {
            Tolerance = g;
            ToleranceBasis = "given";
            return;
        }
        double derived = RoundingSafety * (roundA + roundB);
        Tolerance = Math.Max(derived, Float64WeightFloor);
        ToleranceBasis = derived >= Float64WeightFloor
            ? $"{RoundingSafety:G} × (measured rounding of A {roundA:E2} ({storageA}) + of B {roundB:E2} ({storageB}))"
            : $"the float64 form's uniqueness bound {Float64WeightFloor:G} (measured rounding: A {roundA:E2}, B {roundB:E2})";
    }

    /// <summary>Records the function distance and the measured function roundings, and derives the function tolerance from them.</summary>
    public void SetFunction(double distance, double roundA, double roundB)
    {
        FunctionDistance = distance;
        FunctionRoundingA = roundA;
        FunctionRoundingB = roundB;
        double derived = RoundingSafety * (roundA + roundB);
        FunctionTolerance = Math.Max(derived, Float64FunctionFloor);
        FunctionToleranceBasis = derived >= Float64FunctionFloor
            ? $"{RoundingSafety:G} × (measured function rounding of A {roundA:E2} + of B {roundB:E2})"
            : $"100 ε_F64 = {Float64FunctionFloor:E2} (measured function rounding: A {roundA:E2}, B {roundB:E2})";
    }
}
