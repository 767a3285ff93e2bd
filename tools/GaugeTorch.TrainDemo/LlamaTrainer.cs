using System.Diagnostics;
using System.Globalization;
using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.Architectures.Llama;
using GaugeTorch.Model;
using GaugeTorch.SafeTensors;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

/// <summary>
/// A small LLaMA-family model (RMSNorm, RoPE, GQA, SwiGLU, tied head) trained on the same text with the library's
/// neutral forward (<see cref="Forward.Logits"/>) for docs/merging.md. GPT-2 BPE ids, so the vocabulary is 50,257 and
/// the directory has no tokenizer.json (interpolate takes --tokens).
/// </summary>
internal static class LlamaTrainer
{
    public static void Run(Func<string, string, string> arg)
    {
        string outDir = arg("--out", "llama-demo");
        int steps = int.Parse(arg("--steps", "200"), CultureInfo.InvariantCulture);
        double minutes = double.Parse(arg("--minutes", "8"), CultureInfo.InvariantCulture);
        long seed = long.Parse(arg("--seed", "1"), CultureInfo.InvariantCulture);
        long dataSeed = long.Parse(arg("--data-seed", arg("--seed", "1")), CultureInfo.InvariantCulture);
        int B = int.Parse(arg("--batch", "8"), CultureInfo.InvariantCulture), T = int.Parse(arg("--ctx", "64"), CultureInfo.InvariantCulture);
        int d = int.Parse(arg("--embd", "64"), CultureInfo.InvariantCulture);
        double lrMax = double.Parse(arg("--lr", "3e-3"), CultureInfo.InvariantCulture);
        string? initDir = arg("--init", "") is { Length: > 0 } s ? s : null;
        string textPath = arg("--text", Path.Combine(AppContext.BaseDirectory, "data", "devils-dictionary.txt"));
        var cfg = new LlamaConfig
        {
            ModelType = "llama", HiddenSize = d, IntermediateSize = 176, NumHiddenLayers = int.Parse(arg("--layers", "2"), CultureInfo.InvariantCulture),
            NumAttentionHeads = 4, NumKeyValueHeads = 2, HeadDim = d / 4, VocabSize = 50257, MaxPositionEmbeddings = T, RmsNormEps = 1e-5,
            Rope = new RopeSpec(10000), TieWordEmbeddings = true,
        };
        torch.set_num_threads(Math.Max(1, Environment.ProcessorCount));
        torch.manual_seed(seed);
        var rng = new Random((int)dataSeed);
        int[] ids = Gpt2Tokenizer.Encode(File.ReadAllText(textPath));
        int split = (int)(ids.Length * 0.95);
        int[] train = ids[..split], held = ids[split..];
        using var model = new LlamaModel(cfg, ScalarType.Float32);
        var ps = model.named_parameters().ToList();
        using (no_grad())
        {
            foreach (var (name, p) in ps)
            {
                if (name.EndsWith("norm.weight", StringComparison.Ordinal)) p.fill_(1.0);
                else if (name.Contains("o_proj") || name.Contains("down_proj")) p.copy_(randn(p.shape) * (0.02 / Math.Sqrt(2 * cfg.NumHiddenLayers)));
                else p.copy_(randn(p.shape) * 0.02);
            }
            if (initDir is not null)
            {
                using var store = SafeTensorStore.Open(initDir);
                foreach (var (name, p) in ps) p.copy_(store.Load(name, ScalarType.Float32));
                Console.WriteLine($"initialised from {initDir}");
            }
        }
        foreach (var (_, p) in ps) p.requires_grad_(true);
        var all = ps.Select(p => p.parameter).ToList();
        var opt = optim.AdamW(all, lr: lrMax, weight_decay: 0.01);
        var adapter = new LlamaAdapter(cfg);
        var byName = ps.ToDictionary(p => p.name, p => (Tensor)p.parameter);
        var traits = adapter.Traits with { Tied = true };

        Tensor Loss(int[] source, int batch, Random r)
        {
            using var scope = NewDisposeScope();
            var layers = Enumerable.Range(0, cfg.NumHiddenLayers).Select(l => adapter.ToView(l, n => byName[n])).ToList();
            var g = adapter.GlobalsToView(n => byName[n], true);
            Tensor total = zeros(1);
            for (int b = 0; b < batch; b++)
            {
                int start = r.Next(0, source.Length - T - 1);
                var x = tensor(source.Skip(start).Take(T).Select(i => (long)i).ToArray());
                var y = tensor(source.Skip(start + 1).Take(T).Select(i => (long)i).ToArray());
                total = total + nn.functional.cross_entropy(Forward.Logits(x, layers, g, traits), y);
            }
            return (total / batch).squeeze().MoveToOuterDisposeScope();
        }

        double HeldOut()
        {
            using var _ = no_grad();
            var r = new Random(99);
            double sum = 0;
            for (int i = 0; i < 4; i++) { using var l = Loss(held, 8, r); sum += l.item<float>(); }
            return sum / 4;
        }

        var sw = Stopwatch.StartNew();
        int warmup = Math.Max(1, steps / 20), done = 0;
        double last = double.NaN;
        Console.WriteLine($"llama d={d} L={cfg.NumHiddenLayers} H=4 G=2 F={cfg.IntermediateSize}: initial held-out {HeldOut():F3}");
        for (int step = 1; step <= steps; step++)
        {
            double lr = step <= warmup ? lrMax * step / warmup : 0.1 * lrMax + 0.9 * lrMax * 0.5 * (1 + Math.Cos(Math.PI * (step - warmup) / Math.Max(1, steps - warmup)));
            foreach (var pg in opt.ParamGroups) pg.LearningRate = lr;
            opt.zero_grad();
            using (var loss = Loss(train, B, rng)) { loss.backward(); last = loss.item<float>(); }
            nn.utils.clip_grad_norm_(all, 1.0);
            opt.step();
            done = step;
            if (step % 25 == 0) Console.WriteLine($"step {step}/{steps}  train {last:F3}  {sw.Elapsed.TotalSeconds:F0} s");
            if (sw.Elapsed.TotalMinutes > minutes) { Console.WriteLine($"time budget of {minutes} min reached at step {step}"); break; }
        }
        double final = HeldOut();
        Console.WriteLine($"final: train {last:F3}, held-out {final:F3}, {done} steps, {sw.Elapsed.TotalMinutes:F1} min");
        Directory.CreateDirectory(outDir);
        var tensors = new List<KeyValuePair<string, Tensor>>();
        using (no_grad())
            foreach (var (name, p) in ps) tensors.Add(new(name, p.detach().clone()));
        var meta = new Dictionary<string, string>
        {
            ["format"] = "pt", ["generator"] = "tools/GaugeTorch.TrainDemo --arch llama", ["steps"] = done.ToString(CultureInfo.InvariantCulture),
            ["seed"] = seed.ToString(CultureInfo.InvariantCulture), ["heldout_loss"] = final.ToString("F4", CultureInfo.InvariantCulture),
        };
        SafeTensorWriter.WriteAll(Path.Combine(outDir, "model.safetensors"), tensors, meta);
        GaugeTorch.AtomicFile.WriteAllText(Path.Combine(outDir, "config.json"), cfg.ToJsonText("float32"));
        // The last 1,536 held-out token ids, for `interpolate --tokens` (the directory has no tokenizer.json).
        File.WriteAllText(Path.Combine(outDir, "heldout-tokens.txt"), string.Join(",", held[^Math.Min(1536, held.Length)..]));
        Console.WriteLine($"wrote {outDir}");
    }
}
