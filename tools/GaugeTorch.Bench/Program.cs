using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using GaugeTorch.Architectures.Gpt2;
using TorchSharp;

// Measurements for docs/benchmarks.md (run by scripts/bench-foundation.sh). Each mode prints one JSON object on stdout.
//   load    MODEL DTYPE            time of Gpt2Checkpoint.Open + Gpt2Model.Load, and the process's peak RSS (VmHWM)
//   forward MODEL DTYPE T REPS     forward time for T tokens (best and median of REPS after one warm-up) and GFLOP/s
//   matmul  DTYPE M K N REPS       a plain TorchSharp matmul [M,K]·[K,N] for comparison

CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;
if (args.Length < 1) return Usage();
try
{
    return args[0] switch
    {
        "load" when args.Length == 3 => Load(args[1], Dtype(args[2])),
        "forward" when args.Length == 5 => Forward(args[1], Dtype(args[2]), int.Parse(args[3]), int.Parse(args[4])),
        "matmul" when args.Length == 6 => Matmul(Dtype(args[1]), long.Parse(args[2]), long.Parse(args[3]), long.Parse(args[4]), int.Parse(args[5])),
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
    Console.Error.WriteLine("usage: gaugetorch-bench load MODEL float32|float64 | forward MODEL DTYPE T REPS | matmul DTYPE M K N REPS");
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

static int Load(string path, torch.ScalarType dtype)
{
    _ = torch.zeros(1); // load the native library outside the timed region
    long before = VmHwm();
    var sw = Stopwatch.StartNew();
    using var ck = Gpt2Checkpoint.Open(path);
    double open = sw.Elapsed.TotalSeconds;
    using var m = Gpt2Model.Load(ck, dtype);
    double total = sw.Elapsed.TotalSeconds;
    Emit(new
    {
        mode = "load", dtype = dtype.ToString(), file_bytes = ck.Store.TotalBytes, open_s = open, load_s = total,
        vm_hwm_before_bytes = before, vm_hwm_bytes = VmHwm(), threads = torch.get_num_threads(),
    });
    return 0;
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
