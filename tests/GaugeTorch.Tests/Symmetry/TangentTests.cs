using GaugeTorch.Model;
using GaugeTorch.Symmetry;
using GaugeTorch.Tests.Llama;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace GaugeTorch.Tests.Symmetry;

/// <summary>
/// Every continuous family's tangent (the <see cref="ITangent"/> contract) against a central finite difference of the
/// family's own action: (exp(εX)·θ − exp(−εX)·θ) / 2ε, on the layer part and on the global part, within 1e-7 relative.
/// </summary>
public class TangentTests(ITestOutputHelper output)
{
    private const double Eps = 1e-5;

    /// <summary>
    /// Every continuous family with a fixture it holds for: GPT-2's tied or untied float64 checkpoint, or (for the
    /// LLaMA family's families, and the shared ones once more) a Llama / Qwen2 fixture (<see cref="LlamaFixtures"/>).
    /// </summary>
    public static TheoryData<string, string> Continuous()
    {
        var data = new TheoryData<string, string>();
        using var gpt2 = Checkpoint.Open(FamilyTests.Untied64);
        using var qwen2 = Checkpoint.Open(LlamaFixtures.Get("qwen2"));     // tied, q/k/v biases
        using var bias = Checkpoint.Open(LlamaFixtures.Get("llama-bias")); // untied, attention and MLP biases
        foreach (var f in SymmetryCatalog.Families.Where(f => !f.Discrete))
        {
            if (f.HoldsFor(gpt2.Traits))
                data.Add(f.Name, f.Name is "token-mean" or "final-gain" or "unembed-offset" or "final-bias" or "residual-rotation" ? "gpt2-untied" : "gpt2-tied");
            if (f.HoldsFor(qwen2.Traits)) data.Add(f.Name, "qwen2");
            else if (f.HoldsFor(bias.Traits)) data.Add(f.Name, "llama-bias");
        }
        return data;
    }

    private static string Fixture(string name) => name switch
    {
        "gpt2-tied" => FamilyTests.Tied64,
        "gpt2-untied" => FamilyTests.Untied64,
        _ => LlamaFixtures.Get(name),
    };

    [Fact]
    public void EveryContinuousFamilyHasAGenerator()
    {
        foreach (var dir in new[] { FamilyTests.Untied64, LlamaFixtures.Get("qwen2"), LlamaFixtures.Get("llama-bias") })
        {
            using var ck = Checkpoint.Open(dir);
            foreach (var f in SymmetryCatalog.For(ck.Traits))
                Assert.Equal(!f.Discrete, f.RandomGenerator(new SampleKey(1, 0), ck.Traits) is not null);
        }
    }

    [Theory]
    [MemberData(nameof(Continuous))]
    public void TangentMatchesTheFiniteDifferenceOfTheFamilysAction(string family, string fixture)
    {
        using var scope = NewDisposeScope();
        using var ck = Checkpoint.Open(Fixture(fixture));
        var t = ck.Traits;
        var f = SymmetryCatalog.Families.Single(x => x.Name == family && x.HoldsFor(t));
        using var gen = f.RandomGenerator(new SampleKey(3, 1), t)!;
        bool any = false;

        var at = ck.LoadLayer(1, ScalarType.Float64);
        var v = ((ITangent)gen).Layer(1, at);
        if (v is not null)
        {
            using var plus = gen.Exp(Eps);
            using var minus = gen.Exp(-Eps);
            var a = new LayerTransform([plus.Layer(1, at)!]).Apply(at, t);
            var b = new LayerTransform([minus.Layer(1, at)!]).Apply(at, t);
            var err = Compare(a.Named().Zip(b.Named(), v.Named()).Select(p => (p.First.Role, p.First.Tensor, p.Second.Tensor, p.Third.Tensor)), $"{family} layer");
            Assert.True(err <= 1e-7, $"{family}: layer tangent differs from the finite difference by {err:G3}");
            any = true;
        }

        var g = ck.LoadGlobals(ScalarType.Float64);
        var vg = ((ITangent)gen).Globals(g);
        if (vg is not null)
        {
            GlobalView Moved(double tau)
            {
                using var e = gen.Exp(tau);
                using var state = new GlobalState(g, t);
                new GlobalTransform([e.Globals(g)!]).Apply(state);
                return state.Materialize();
            }
            var a = Moved(Eps);
            var b = Moved(-Eps);
            var err = Compare(a.Named().Zip(b.Named(), vg.Named()).Select(p => (p.First.Role, p.First.Tensor, p.Second.Tensor, p.Third.Tensor)), $"{family} globals");
            Assert.True(err <= 1e-7, $"{family}: global tangent differs from the finite difference by {err:G3}");
            any = true;
        }
        Assert.True(any, $"{family} has neither a layer nor a global tangent");
    }

    /// <summary>‖FD − v‖ / ‖v‖ over all tensors; the tangent must not vanish.</summary>
    private double Compare(IEnumerable<(string Role, Tensor Plus, Tensor Minus, Tensor Tangent)> parts, string what)
    {
        double num = 0, den = 0;
        foreach (var (role, plus, minus, tangent) in parts)
        {
            using var fd = (plus - minus) / (2 * Eps);
            num += (fd - tangent).square().sum().item<double>();
            den += tangent.square().sum().item<double>();
        }
        Assert.True(den > 0, $"{what}: the tangent is zero");
        double err = Math.Sqrt(num / den);
        output.WriteLine($"{what}: ‖FD − v‖/‖v‖ = {err:E2}");
        return err;
    }
}
