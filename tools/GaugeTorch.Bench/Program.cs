using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using GaugeTorch.Architectures.Gpt2;
using TorchSharp;

// Measurements for docs/benchmarks.md (run by scripts/bench-foundation.sh). Each mode prints one JSON object on stdout.
//   load    MODEL DTYPE [map|copy] time of Gpt2Checkpoint.Open + Gpt2Model.Load, and the process's peak RSS (VmHWM);
//                                  map (default): parameters of the compute dtype zero-copy over the file's private
//                                  mapping; copy: every parameter copied (the loader before issue 12). Then the time to
//                                  read every parameter page once (what the first forward pays on a mapped model) and
//                                  the peak RSS after it
//   forward MODEL DTYPE T REPS     forward time for T tokens (best and median of REPS after one warm-up) and GFLOP/s
//   matmul  DTYPE M K N REPS       a plain TorchSharp matmul [M,K]·[K,N] for comparison
//   generate MODEL DTYPE PROMPT [PAIRS]  greedy generation with the KV cache (Gpt2Model.GenerateGreedy, the code behind
//                                  'gaugetorch generate') from PROMPT random tokens to the full context: time of every
//                                  token by position, VmHWM before and after; then PAIRS (20) interleaved single steps
//                                  at the second and at the last position
//   steps MODEL DTYPE PAIRS        only the interleaved steps
//   gauge-groups MODEL T PER       issue 12 item 5: verify-invariance's gauge and forward seconds group by group, each
//                                  group's PER elements alone through the evaluator (GaugeGroups.cs)
//   block MODEL T REPS             issue 12, item 1: verify-invariance's float64 work on one layer, per family and for
//                                  all together: sampling + transforming the layer (gauge) against the transformed
//                                  block's forward on T tokens; and the forward's matmul rate against plain float64
//                                  matmuls of the same shapes, interleaved in the same run

CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;
if (args.Length < 1) return Usage();
// generate/steps measure what 'gaugetorch generate' does, so they run with the CLI's native settings (passive OpenMP
// waiting, glibc keeping freed blocks), applied before libtorch loads. Without them, on this shared 2-core host, a
// single step took 373 ms instead of the CLI's 80 ms average. The older modes keep the settings they were measured with.
if (args[0] is "generate" or "steps") GaugeTorch.NativeRuntimeTuning.TuneForStreaming();
try
{
    return args[0] switch
    {
        "load" when args.Length is 3 or 4 => Load(args[1], Dtype(args[2]), args.Length == 3 || args[3] == "map" ? true : args[3] == "copy" ? false : throw new ArgumentException($"'{args[3]}' is not map or copy")),
        "forward" when args.Length == 5 => Forward(args[1], Dtype(args[2]), int.Parse(args[3]), int.Parse(args[4])),
        "matmul" when args.Length == 6 => Matmul(Dtype(args[1]), long.Parse(args[2]), long.Parse(args[3]), long.Parse(args[4]), int.Parse(args[5])),
        "generate" when args.Length is 4 or 5 => Generate(args[1], Dtype(args[2]), int.Parse(args[3]), args.Length == 5 ? int.Parse(args[4]) : 20, full: true),
        "steps" when args.Length == 4 => Generate(args[1], Dtype(args[2]), 1, int.Parse(args[3]), full: false),
        "block" when args.Length == 4 => BlockProbe.Run(args[1], int.Parse(args[2]), int.Parse(args[3])),
        "gauge-groups" when args.Length == 4 => GaugeGroups.Run(args[1], int.Parse(args[2]), int.Parse(args[3])),
        "gather" when args.Length == 4 => GatherProbe.Run(long.Parse(args[1]), long.Parse(args[2]), int.Parse(args[3])),
        _ => Usage(),
    };
}
catch (Exception e) when (e is ArgumentException or IOException or FormatException or Gpt2FormatException or GaugeTorch.SafeTensors.SafeTensorsException)
{
    Console.Error.WriteLine($"gaugetorch-bench: error: {e.Message}");
    return 2;
}

static int Usage()
{
    Console.Error.WriteLine("usage: gaugetorch-bench load MODEL float32|float64 | forward MODEL DTYPE T REPS | matmul DTYPE M K N REPS | generate MODEL DTYPE PROMPT");
    return 2;
}

static torch.ScalarType Dtype(string s) => s switch
{
    "float32" => torch.ScalarType.Float32,
    "float64" => torch.ScalarType.Float64,
    _ => throw new ArgumentException($"dtype '{s}' is not float32 or float64"),
};

static long VmHwm()
{
    foreach (var line in File.ReadLines("/proc/self/status"))
        if (line.StartsWith("VmHWM:")) return long.Parse(line["VmHWM:".Length..].Trim().Split(' ', '\t')[0]) * 1024; // "VmHWM:\t  123456 kB"
    return -1;
}

static void Emit(object o) => Console.WriteLine(JsonSerializer.Serialize(o));

static int Load(string path, torch.ScalarType dtype, bool map)
{
    _ = torch.zeros(1); // load the native library outside the timed region
    long before = VmHwm();
    var sw = Stopwatch.StartNew();
    using var ck = Gpt2Checkpoint.Open(path);
    double open = sw.Elapsed.TotalSeconds;
    using var m = Gpt2Model.Load(ck, dtype, zeroCopy: map);
    double total = sw.Elapsed.TotalSeconds;
    long loaded = VmHwm();
    // One float per 4 KiB page of every parameter: the page faults a first forward takes on a mapped model.
    var touch = Stopwatch.StartNew();
    double sum = 0;
    foreach (var (_, p) in m.named_parameters()) sum += TouchPages(p);
    double touched = touch.Elapsed.TotalSeconds;
    Emit(new
    {
        mode = "load", dtype = dtype.ToString(), loader = map ? "map" : "copy", file_bytes = ck.Store.TotalBytes, open_s = open, load_s = total,
        touch_s = touched, load_and_touch_s = total + touched, checksum = sum,
        vm_hwm_before_bytes = before, vm_hwm_after_load_bytes = loaded, vm_hwm_bytes = VmHwm(), threads = torch.get_num_threads(),
    });
    return 0;
}

static unsafe double TouchPages(torch.Tensor p)
{
    long bytes = p.numel() * p.element_size();
    byte* b = (byte*)GaugeTorch.SafeTensors.NativeTensorAccess.DataPointer(p);
    double s = 0;
    for (long o = 0; o < bytes; o += 4096) s += b[o];
    return s;
}

/// <summary>Multiply-adds ×2 of one forward as computed (the attention scores are computed for the full T×T square).</summary>
static double ForwardFlops(Gpt2Config c, long t)
{
    double d = c.NEmbd, f = c.NInner, v = c.VocabSize, l = c.NLayer;
    double perTokenMatmul = l * (4 * d * d + 2 * d * f) + v * d; // c_attn 3d², c_proj d², c_fc dF, mlp c_proj Fd, head Vd
    double attention = l * 2 * t * t * d;                         // QKᵀ and A·V: T·T·d_k per head each
    return 2 * (perTokenMatmul * t + attention);
}

static (double Best, double Median) Time(int reps, Action a)
{
    a(); // warm-up
    var times = new List<double>();
    for (int i = 0; i < reps; i++)
    {
        var sw = Stopwatch.StartNew();
        a();
        times.Add(sw.Elapsed.TotalSeconds);
    }
    times.Sort();
    return (times[0], times[times.Count / 2]);
}

static int Forward(string path, torch.ScalarType dtype, int t, int reps)
{
    using var ck = Gpt2Checkpoint.Open(path);
    using var m = Gpt2Model.Load(ck, dtype);
    var rng = new Random(1);
    int[] tokens = Enumerable.Range(0, t).Select(_ => rng.Next(ck.Config.VocabSize)).ToArray();
    var (best, median) = Time(reps, () => m.Logits(tokens).Dispose());
    double flops = ForwardFlops(ck.Config, t);
    Emit(new
    {
        mode = "forward", dtype = dtype.ToString(), tokens = t, reps, best_s = best, median_s = median,
        gflop = flops / 1e9, gflops_best = flops / best / 1e9, parameters = ck.Config.ParameterCount(ck.Tied),
        vm_hwm_bytes = VmHwm(), threads = torch.get_num_threads(),
    });
    return 0;
}

static int Matmul(torch.ScalarType dtype, long m, long k, long n, int reps)
{
    using var a = torch.randn([m, k], dtype);
    using var b = torch.randn([k, n], dtype);
    var (best, median) = Time(reps, () => torch.matmul(a, b).Dispose());
    double flops = 2.0 * m * k * n;
    Emit(new { mode = "matmul", dtype = dtype.ToString(), m, k, n, reps, best_s = best, median_s = median, gflops_best = flops / best / 1e9, threads = torch.get_num_threads() });
    return 0;
}

/// <summary>
/// Per-token cost of cached generation. The first token includes the prompt's prefill, so it is reported apart. Each
/// later token at position p costs the weights (constant: 2·(L·(4d² + 2dF) + Vd) flop) plus attention over p cached
/// positions (4·L·d·p flop: QKᵀ and A·V), so the attention share at p = 1,024 bounds how much a token may slow down.
/// </summary>
static int Generate(string path, torch.ScalarType dtype, int promptLength, int pairs, bool full)
{
    using var ck = Gpt2Checkpoint.Open(path);
    long before = VmHwm();
    using var m = Gpt2Model.Load(ck, dtype);
    long loaded = VmHwm();
    var c = ck.Config;
    var rng = new Random(1);
    int[] prompt = Enumerable.Range(0, promptLength).Select(_ => rng.Next(c.VocabSize)).ToArray();
    var times = new List<double>();
    var sw = Stopwatch.StartNew();
    double last = 0;
    foreach (int _ in m.GenerateGreedy(prompt, full ? c.NPositions : 2))
    {
        double now = sw.Elapsed.TotalSeconds;
        times.Add(now - last);
        last = now;
    }
    // Token i (0-based) is chosen after feeding position promptLength + i - 1 (i ≥ 1): its attention spans that many + 1.
    double Mean(int from, int to) => times.Skip(from).Take(to - from).Average();
    int n = times.Count;
    var buckets = new List<object>();
    for (int b = 1; b < n; b += 64)
    {
        int e = Math.Min(n, b + 64);
        buckets.Add(new { first_position = promptLength + b - 1, last_position = promptLength + e - 2, mean_ms = 1000 * Mean(b, e) });
    }
    // Interleaved, to cancel this shared machine's drift: one step at the second position, one at the last,
    // alternately, on two caches rewound after each step (KvCache.Truncate).
    using var shortCache = m.NewCache();
    using var longCache = m.NewCache();
    using (var p0 = torch.tensor(new long[] { prompt[0] }))
        m.NextLogits(p0, shortCache).Dispose();
    using (var pl = torch.tensor(Enumerable.Range(0, c.NPositions - 1).Select(_ => (long)rng.Next(c.VocabSize)).ToArray()))
        m.NextLogits(pl, longCache).Dispose();
    var shortMs = new List<double>();
    var longMs = new List<double>();
    using var next = torch.tensor(new long[] { 464 });
    for (int r = 0; r <= pairs; r++)
    {
        foreach (var (cache, list) in new[] { (shortCache, shortMs), (longCache, longMs) })
        {
            int at = cache.Length;
            var t0 = Stopwatch.GetTimestamp();
            m.NextLogits(next, cache).Dispose();
            list.Add(Stopwatch.GetElapsedTime(t0).TotalMilliseconds);
            cache.Truncate(at);
        }
    }
    shortMs.RemoveAt(0); // warm-up pair
    longMs.RemoveAt(0);
    var ratios = shortMs.Zip(longMs, (a, b) => b / a).Order().ToList();
    double d = c.NEmbd, f = c.NInner, v = c.VocabSize, l = c.NLayer;
    double weightFlop = 2 * (l * (4 * d * d + 2 * d * f) + v * d);
    double attentionFlopAtEnd = 4 * l * d * (c.NPositions - 1);
    Emit(new
    {
        mode = "generate", dtype = dtype.ToString(), prompt = promptLength, generated = n, positions = c.NPositions,
        total_s = sw.Elapsed.TotalSeconds, first_token_ms = 1000 * times[0],
        early_mean_ms = 1000 * Mean(1, Math.Min(n, 65)), late_mean_ms = 1000 * Mean(Math.Max(1, n - 64), n),
        attention_share_at_end = attentionFlopAtEnd / (weightFlop + attentionFlopAtEnd),
        interleaved_pairs = ratios.Count, step_at_position_1_median_ms = shortMs.Order().ElementAt(shortMs.Count / 2),
        step_at_last_position_median_ms = longMs.Order().ElementAt(longMs.Count / 2),
        last_over_first_ratio_median = ratios[ratios.Count / 2], last_over_first_ratio_min = ratios[0], last_over_first_ratio_max = ratios[^1],
        buckets, file_bytes = ck.Store.TotalBytes,
        vm_hwm_before_load_bytes = before, vm_hwm_after_load_bytes = loaded, vm_hwm_bytes = VmHwm(), threads = torch.get_num_threads(),
    });
    return 0;
}
