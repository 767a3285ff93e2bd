using System.Runtime.InteropServices;

namespace GaugeTorch;

/// <summary>
/// Process-wide native settings for layer-streaming work, applied once at process start (the CLI does it first
/// thing), before libtorch is loaded; a no-op outside Linux/glibc, and switched off by GAUGETORCH_NO_NATIVE_TUNING.
/// (1) OpenMP workers sleep instead of spinning between parallel regions (OMP_WAIT_POLICY=PASSIVE, unless the user
/// set it): the streaming pipelines run their own threads beside libtorch's, and spinning workers took 15 % of the
/// CPU of a gpt2-xl canonicalization (passive: 8.1 s, active: 9.3–10.0 s; verify-invariance on gpt2 shapes: same
/// wall time, 30 % less CPU). (2) glibc's allocator keeps freed large blocks: libtorch allocates tensors with
/// posix_memalign, which glibc serves above 32 MiB with a fresh mmap returned by munmap, so each large float64
/// temporary was zero-filled page by page by the kernel on every use (37 s of system time in the first 46 s gpt2-xl
/// canonicalization). With mmap off for large blocks, no trimming and one arena, freed blocks are reused: 7.8–7.9 s
/// instead of 8.7–9.1 s now (system time 1.5 s instead of 3.0 s), for a peak RSS of 2.4 GB instead of 1.8 GB
/// (docs/benchmarks.md).
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
        if (Tuned || !OperatingSystem.IsLinux() || Environment.GetEnvironmentVariable("GAUGETORCH_NO_NATIVE_TUNING") is { Length: > 0 }) return;
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
