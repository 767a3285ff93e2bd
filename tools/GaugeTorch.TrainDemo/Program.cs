// Trains the embedded demo GPT-2 on The Devil's Dictionary (public domain) with GaugeTorch's own forward math.
// Usage: dotnet run --project tools/GaugeTorch.TrainDemo -c Release -- [--out DIR] [--steps N] [--minutes M] [--seed S]
//   smaller models and fine-tuning (docs/merging.md): [--layers L] [--embd d] [--heads h] [--ctx T] [--batch B] [--lr X]
//   [--init DIR (start from this checkpoint; --seed then only picks the batches)] [--data-seed S] [--dtype f16|f32]
//   --arch llama: a small LLaMA-family model instead (LlamaTrainer.cs; F32, tied, GQA)
using System.Diagnostics;
using System.Globalization;
using System.Text;
using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.SafeTensors;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

string Arg(string name, string dflt) { int i = Array.IndexOf(args, name); return i >= 0 && i + 1 < args.Length ? args[i + 1] : dflt; }
if (Arg("--arch", "gpt2") == "llama") { LlamaTrainer.Run(Arg); return; }
string outDir = Arg("--out", "src/GaugeTorch/DemoModel/demo-gpt2");
int steps = int.Parse(Arg("--steps", "400"), CultureInfo.InvariantCulture);
double minutes = double.Parse(Arg("--minutes", "12"), CultureInfo.InvariantCulture);
long seed = long.Parse(Arg("--seed", "1234"), CultureInfo.InvariantCulture);
string textPath = Arg("--text", Path.Combine(AppContext.BaseDirectory, "data", "devils-dictionary.txt"));
int B = int.Parse(Arg("--batch", "16"), CultureInfo.InvariantCulture), T = int.Parse(Arg("--ctx", "128"), CultureInfo.InvariantCulture);
int nEmbd = int.Parse(Arg("--embd", "128"), CultureInfo.InvariantCulture);
var cfg = new Gpt2Config
{
    NLayer = int.Parse(Arg("--layers", "2"), CultureInfo.InvariantCulture), NEmbd = nEmbd, NHead = int.Parse(Arg("--heads", "4"), CultureInfo.InvariantCulture),
    NInner = 4 * nEmbd, NPositions = T, VocabSize = 50257,
};
string? initDir = Arg("--init", "") is { Length: > 0 } init ? init : null;
long dataSeed = long.Parse(Arg("--data-seed", Arg("--seed", "1234")), CultureInfo.InvariantCulture);
var storeType = Arg("--dtype", "f16") == "f32" ? ScalarType.Float32 : ScalarType.Float16;

torch.set_num_threads(Math.Max(1, Environment.ProcessorCount));
torch.manual_seed(seed);
var rng = new Random((int)dataSeed);
int[] ids = Gpt2Tokenizer.Encode(File.ReadAllText(textPath));
int split = (int)(ids.Length * 0.95);
int[] train = ids[..split], held = ids[split..];
Console.WriteLine($"text {textPath}: {ids.Length} tokens ({train.Length} train, {held.Length} held out)");

Parameter P(Tensor t) => new(t, requires_grad: true);
var wte = P(randn(cfg.VocabSize, cfg.NEmbd) * 0.02);
var wpe = P(randn(cfg.NPositions, cfg.NEmbd) * 0.01);
var lnfW = P(ones(cfg.NEmbd));
var lnfB = P(zeros(cfg.NEmbd));
var layers = Enumerable.Range(0, cfg.NLayer).Select(_ => LayerWeights.FromFunc(s => P(s switch
{
    "ln_1.weight" or "ln_2.weight" => ones(cfg.NEmbd),
    "attn.c_proj.weight" or "mlp.c_proj.weight" => randn(Gpt2Keys.LayerShape(cfg, s)) * (0.02 / Math.Sqrt(2 * cfg.NLayer)),
    _ when s.EndsWith("bias", StringComparison.Ordinal) || s.StartsWith("ln_", StringComparison.Ordinal) => zeros(Gpt2Keys.LayerShape(cfg, s)),
    _ => randn(Gpt2Keys.LayerShape(cfg, s)) * 0.02,
}))).ToList();
if (initDir is not null)
{
    // Fine-tuning: start from a checkpoint of the same shapes (its config must match the options).
    using var initCk = Gpt2Checkpoint.Open(initDir);
    using var _ = no_grad();
    using (var g0 = initCk.LoadGlobals(ScalarType.Float32))
    {
        wte.copy_(g0.Wte); wpe.copy_(g0.Wpe); lnfW.copy_(g0.LnFW); lnfB.copy_(g0.LnFB);
    }
    for (int l = 0; l < cfg.NLayer; l++)
    {
        using var lw = initCk.LoadLayer(l, ScalarType.Float32);
        foreach (var ((_, dst), (_, src)) in layers[l].Named().Zip(lw.Named())) dst.copy_(src);
    }
    Console.WriteLine($"initialised from {initDir}");
}
var globals = new GlobalWeights { Wte = wte, Wpe = wpe, LnFW = lnfW, LnFB = lnfB };
var all = new List<Parameter> { wte, wpe, lnfW, lnfB };
foreach (var l in layers) all.AddRange(l.Named().Select(p => (Parameter)p.Tensor));
double lrMax = double.Parse(Arg("--lr", "3e-3"), CultureInfo.InvariantCulture);
var opt = optim.AdamW(all, lr: lrMax, weight_decay: 0.01);

Tensor Loss(int[] source, int batch, Random r)
{
    var x = new long[batch * T];
    var y = new long[batch * T];
    for (int b = 0; b < batch; b++)
    {
        int start = r.Next(0, source.Length - T - 1);
        for (int t = 0; t < T; t++) { x[b * T + t] = source[start + t]; y[b * T + t] = source[start + t + 1]; }
    }
    using var scope = NewDisposeScope();
    var xt = tensor(x).view(batch, T);
    var h = Gpt2Functional.Embed(xt, wte, wpe);
    foreach (var l in layers) h = Gpt2Functional.Block(h, l, cfg);
    var logits = Gpt2Functional.Head(h, globals, cfg);
    return nn.functional.cross_entropy(logits.view(-1, cfg.VocabSize), tensor(y)).MoveToOuterDisposeScope();
}

double HeldOut()
{
    using var _ = no_grad();
    var r = new Random(99);
    double sum = 0;
    for (int i = 0; i < 8; i++) { using var l = Loss(held, 8, r); sum += l.item<float>(); }
    return sum / 8;
}

var log = new StringBuilder("step,train_loss,heldout_loss,lr,seconds\n");
var sw = Stopwatch.StartNew();
int warmup = Math.Max(1, steps / 20);
double initialHeld = HeldOut();
Console.WriteLine($"initial held-out loss {initialHeld:F3} (ln V = {Math.Log(cfg.VocabSize):F3})");
log.AppendLine(FormattableString.Invariant($"0,,{initialHeld:F5},0,0"));
int done = 0;
double lastTrain = double.NaN;
for (int step = 1; step <= steps; step++)
{
    double lr = step <= warmup ? lrMax * step / warmup : 0.1 * lrMax + 0.9 * lrMax * 0.5 * (1 + Math.Cos(Math.PI * (step - warmup) / Math.Max(1, steps - warmup)));
    foreach (var g in opt.ParamGroups) g.LearningRate = lr;
    opt.zero_grad();
    using (var loss = Loss(train, B, rng))
    {
        loss.backward();
        lastTrain = loss.item<float>();
    }
    nn.utils.clip_grad_norm_(all, 1.0);
    opt.step();
    done = step;
    string heldText = "";
    if (step % 25 == 0 || step == steps)
    {
        double hl = HeldOut();
        heldText = hl.ToString("F5", CultureInfo.InvariantCulture);
        Console.WriteLine($"step {step}/{steps}  train {lastTrain:F3}  held-out {hl:F3}  lr {lr:G3}  {sw.Elapsed.TotalSeconds:F0} s");
    }
    log.AppendLine(FormattableString.Invariant($"{step},{lastTrain:F5},{heldText},{lr:G4},{sw.Elapsed.TotalSeconds:F1}"));
    if (sw.Elapsed.TotalMinutes > minutes) { Console.WriteLine($"time budget of {minutes} min reached at step {step}"); break; }
}
double finalHeld = HeldOut();
Console.WriteLine($"final: train {lastTrain:F3}, held-out {finalHeld:F3}, {done} steps, {sw.Elapsed.TotalMinutes:F1} min");

// Save in HuggingFace layout, F16 storage (the F32 file would be 27 MB; the repo budget is 20 MB).
Directory.CreateDirectory(outDir);
var tensors = new List<KeyValuePair<string, Tensor>>();
using (no_grad())
{
    foreach (var (n, t) in globals.Named()) tensors.Add(new(n, t.detach().to_type(storeType)));
    for (int l = 0; l < cfg.NLayer; l++)
        foreach (var (s, t) in layers[l].Named()) tensors.Add(new(Gpt2Keys.Layer(l, s), t.detach().to_type(storeType)));
}
var meta = new Dictionary<string, string>
{
    ["format"] = "pt", ["generator"] = "tools/GaugeTorch.TrainDemo", ["text"] = "The Devil's Dictionary (Ambrose Bierce, public domain)",
    ["steps"] = done.ToString(CultureInfo.InvariantCulture), ["seed"] = seed.ToString(CultureInfo.InvariantCulture),
    ["heldout_loss"] = finalHeld.ToString("F4", CultureInfo.InvariantCulture),
};
SafeTensorWriter.WriteAll(Path.Combine(outDir, "model.safetensors"), tensors, meta);
GaugeTorch.AtomicFile.WriteAllText(Path.Combine(outDir, "config.json"), cfg.ToJsonText());
GaugeTorch.AtomicFile.WriteAllText(Path.Combine(outDir, "loss.csv"), log.ToString());
GaugeTorch.AtomicFile.WriteAllText(Path.Combine(outDir, "loss.svg"), LossPlot.Render(log.ToString(), initialHeld));
Console.WriteLine($"wrote {outDir}");
