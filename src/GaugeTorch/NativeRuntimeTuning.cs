using System.Runtime.InteropServices;

namespace GaugeTorch;

/// <summary>
/// Process-wide native settings for layer-streaming work, applied once at process start (the CLI does it first
/// thing), before libtorch is loaded. (1) OpenMP threads sleep instead of spinning between parallel regions
/// (OMP_WAIT_POLICY=PASSIVE unless the user set it): the pipelines run their own reader/writer threads beside
/// libtorch's, and spinning OpenMP workers took 15 % of the CPU of a gpt2-xl canonicalization. (2) glibc's allocator for layer-streaming work. libtorch allocates each tensor with posix_memalign; glibc
/// serves blocks above 32 MiB with a fresh mmap and returns them with munmap, so every float64 layer temporary
/// (up to 80 MB on gpt2-xl) was zero-filled page by page by the kernel on each use: 37 s of system time in a
/// 46 s gpt2-xl canonicalization (docs/benchmarks.md). With mmap off for large blocks, no trimming and one arena,
/// freed blocks are reused. Peak memory grows only by the allocator's fragmentation (measured: under 20 %).
/// Call once at process start, before large allocations; a no-op outside Linux/glibc.
/// </summary>
public static class NativeRuntimeTuning
{
    private const int M_TRIM_THRESHOLD = -1;
    private const int M_TOP_PAD = -2;
    private const int M_MMAP_MAX = -4;
    private const int M_ARENA_MAX = -8;

    [DllImport("libc.so.6", EntryPoint = "mallopt")]
    private static extern int MallOpt(int param, int value);

    [DllImport("libc.so.6", EntryPoint = "setenv")]
    private static extern int SetEnv([MarshalAs(UnmanagedType.LPUTF8Str)] string name, [MarshalAs(UnmanagedType.LPUTF8Str)] string value, int overwrite);

    public static bool Tuned { get; private set; }

    public static void TuneForStreaming()
    {
        if (Tuned || !OperatingSystem.IsLinux() || Environment.GetEnvironmentVariable("GAUGETORCH_NO_MALLOPT") is { Length: > 0 }) return;
        try
        {
            // libgomp reads this when libtorch loads it; .NET's Environment does not reach the C environment.
            SetEnv("OMP_WAIT_POLICY", "PASSIVE", 0);
            bool ok = MallOpt(M_ARENA_MAX, 1) == 1;
            ok &= MallOpt(M_MMAP_MAX, 0) == 1;
            ok &= MallOpt(M_TRIM_THRESHOLD, int.MaxValue) == 1;
            ok &= MallOpt(M_TOP_PAD, 64 << 20) == 1;
            Tuned = ok;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            // musl or another libc: keep its defaults.
        }
    }
}
