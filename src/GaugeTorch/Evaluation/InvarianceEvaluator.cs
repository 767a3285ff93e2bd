using System.Diagnostics;
using GaugeTorch.Gauge;
using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.SafeTensors;
using TorchSharp;
using static TorchSharp.torch;

namespace GaugeTorch.Evaluation;

/// <summary>One transformed copy of the model to check: a valid group element or an invalid control.</summary>
public sealed record InvarianceCase(string Group, bool Valid, GaugeElement Element);

/// <summary>The measured error of one case.</summary>
public sealed record InvarianceCaseResult(string Group, bool Valid, double RelativeError, double Top1Agreement, double MaxKl);

public sealed record InvarianceRunResult(
    IReadOnlyList<InvarianceCaseResult> Cases, int Tokens, ScalarType ComputeType,
    double GaugeSeconds, double ForwardSeconds, double LoadSeconds);

/// <summary>
/// Runs the original model and every transformed copy together, streaming the checkpoint layer by layer: each layer
/// is read from the memory-mapped file once, every case's transformed layer is made from it in float64 (then cast
/// to the compute dtype), used for that case's hidden state [T, d] and dropped. Memory is one layer per case at a
/// time plus the embeddings, whatever the model size.
/// </summary>
public static class InvarianceEvaluator
{
    public static IReadOnlyList<InvarianceCase> StandardCases(Gpt2Config c, IReadOnlyList<GaugeFamily> families, int perGroup, long seed, bool controls)
    {
        var cases = new List<InvarianceCase>();
        int stream = 0;
        foreach (var f in families)
            for (int i = 0; i < perGroup; i++)
                cases.Add(new InvarianceCase(f.CliName(), true, new GaugeElement(c, [f], seed, stream++)));
        if (families.Count > 1)
            for (int i = 0; i < perGroup; i++)
                cases.Add(new InvarianceCase("all-together", true, new GaugeElement(c, families, seed, stream++)));
        if (controls)
            foreach (var ctl in Enum.GetValues<InvalidControl>())
                for (int i = 0; i < perGroup; i++)
                    cases.Add(new InvarianceCase(ctl.CliName(), false, new GaugeElement(c, [], seed, stream++, ctl)));
        return cases;
    }

    public static InvarianceRunResult Run(Gpt2Checkpoint ck, int[] tokens, ScalarType compute, IReadOnlyList<InvarianceCase> cases, IProgress<(int Layer, int Layers)>? progress = null)
    {
        using var _ = no_grad();
        var c = ck.Config;
        if (tokens.Length > c.NPositions) throw new ArgumentException($"{tokens.Length} tokens exceed the model's {c.NPositions} positions");
        double eps = InvarianceMetrics.EpsMach(compute);
        var gauge = new Stopwatch();
        var fwd = new Stopwatch();
        var load = Stopwatch.StartNew();
        using var tok = tensor(tokens.Select(t => (long)t).ToArray(), ScalarType.Int64);
        using var globals = ck.LoadGlobals(compute);
        load.Stop();

        // Embeddings.
        fwd.Start();
        var x = Gpt2Functional.Embed(tok, globals.Wte, globals.Wpe);
        fwd.Stop();
        var xs = new Tensor[cases.Count];
        var offsets = new EmbeddingOffset?[cases.Count];
        for (int k = 0; k < cases.Count; k++)
        {
            var e = cases[k].Element;
            if (e.HasEmbeddingOffset)
            {
                gauge.Start();
                using var scope = NewDisposeScope();
                using var wte64 = ck.Load(Gpt2Keys.Wte, ScalarType.Float64);
                using var wpe64 = ck.Load(Gpt2Keys.Wpe, ScalarType.Float64);
                var off = e.SampleGlobal(wte64, wpe64)!;
                off.U.DetachFromDisposeScope();
                off.CPos.DetachFromDisposeScope();
                offsets[k] = off;
                var (wte2, wpe2) = off.Apply(wte64, wpe64);
                var wteC = wte2.to_type(compute);
                var wpeC = wpe2.to_type(compute);
                gauge.Stop();
                fwd.Start();
                xs[k] = Gpt2Functional.Embed(tok, wteC, wpeC).DetachFromDisposeScope();
                fwd.Stop();
            }
            else if (e.GlobalRotation is { } rot)
            {
                gauge.Start();
                xs[k] = matmul(x.to_type(ScalarType.Float64), rot.Q).to_type(compute).DetachFromDisposeScope();
                gauge.Stop();
            }
            else xs[k] = x.clone();
        }

        for (int l = 0; l < c.NLayer; l++)
        {
            load.Start();
            // One float64 copy of the layer per pass; every case samples from and transforms that copy.
            using var stored = ck.LoadLayer(l, ScalarType.Float64);
            using var w = compute == ScalarType.Float64 ? stored : stored.To(compute);
            load.Stop();
            fwd.Start();
            var nx = Gpt2Functional.Block(x, w, c);
            x.Dispose();
            x = nx;
            fwd.Stop();
            for (int k = 0; k < cases.Count; k++)
            {
                using var scope = NewDisposeScope();
                gauge.Start();
                var element = cases[k].Element.SampleLayer(l, stored);
                var w64 = element.Apply(stored, c);
                var wk = compute == ScalarType.Float64 ? w64 : w64.To(compute);
                gauge.Stop();
                fwd.Start();
                var nk = Gpt2Functional.Block(xs[k], wk, c).DetachFromDisposeScope();
                xs[k].Dispose();
                xs[k] = nk;
                fwd.Stop();
            }
            progress?.Report((l + 1, c.NLayer));
        }

        fwd.Start();
        using var reference = Gpt2Functional.Head(x, globals, c);
        fwd.Stop();
        x.Dispose();
        var results = new List<InvarianceCaseResult>();
        for (int k = 0; k < cases.Count; k++)
        {
            using var scope = NewDisposeScope();
            Tensor logits;
            if (offsets[k] is { } off)
            {
                gauge.Start();
                var (wte2, _) = off.Apply(ck.Load(Gpt2Keys.Wte, ScalarType.Float64), ck.Load(Gpt2Keys.Wpe, ScalarType.Float64));
                var g2 = new GlobalWeights { Wte = wte2.to_type(compute), Wpe = globals.Wpe, LnFW = globals.LnFW, LnFB = globals.LnFB, LmHead = globals.LmHead };
                gauge.Stop();
                fwd.Start();
                logits = Gpt2Functional.Head(xs[k], g2, c);
                fwd.Stop();
            }
            else if (cases[k].Element.GlobalRotation is { } rot)
            {
                fwd.Start();
                var n = Gpt2Functional.LayerNorm(xs[k], globals.LnFW, globals.LnFB, c.LayerNormEpsilon);
                var rotated = matmul(n.to_type(ScalarType.Float64), rot.Q.t()).to_type(compute);
                logits = matmul(rotated, globals.Head.t());
                fwd.Stop();
            }
            else
            {
                fwd.Start();
                logits = Gpt2Functional.Head(xs[k], globals, c);
                fwd.Stop();
            }
            var cmp = InvarianceMetrics.Compare(reference, logits, eps);
            results.Add(new InvarianceCaseResult(cases[k].Group, cases[k].Valid, cmp.RelativeError, cmp.Top1Agreement, cmp.MaxKl));
            xs[k].Dispose();
        }
        return new InvarianceRunResult(results, tokens.Length, compute, gauge.Elapsed.TotalSeconds, fwd.Elapsed.TotalSeconds, load.Elapsed.TotalSeconds);
    }
}
