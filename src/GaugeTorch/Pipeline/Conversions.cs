using GaugeTorch.SafeTensors;

namespace GaugeTorch.Pipeline;

/// <summary>
/// Conversions between stored dtypes and float64 on raw memory (a memory-mapped tensor, a staging slot), split over
/// two threads. Copied from the canonical form's kernels (GaugeTorch.Canonical.Gpt2.CanonicalKernels) so that the
/// pipeline does not depend on the canonicalizer; the rounding is libtorch's <c>to(dtype)</c> (F16 and BF16 through
/// float32, BF16 to nearest even).
/// </summary>
public static unsafe class Conversions
{
    private static readonly int Parts = Math.Max(1, Math.Min(2, Environment.ProcessorCount));

    private static void Split(long n, long align, Action<long, long> body)
    {
        if (Parts == 1 || n < 2 * align || n < 1 << 16)
        {
            body(0, n);
            return;
        }
        long mid = (n / 2 + align - 1) / align * align;
        Parallel.Invoke(() => body(0, mid), () => body(mid, n));
    }

    /// <summary>Converts <paramref name="n"/> stored values (F64, F32, F16 or BF16) to float64.</summary>
    public static void ToFloat64(IntPtr src, DType dtype, long n, IntPtr destination)
    {
        double* dst = (double*)destination;
        switch (dtype)
        {
            case DType.F64:
                Buffer.MemoryCopy((void*)src, dst, n * sizeof(double), n * sizeof(double));
                break;
            case DType.F32:
                Split(n, 8, (a, b) => { float* x = (float*)src; for (long i = a; i < b; i++) dst[i] = x[i]; });
                break;
            case DType.F16:
                Split(n, 8, (a, b) => { Half* x = (Half*)src; for (long i = a; i < b; i++) dst[i] = (double)x[i]; });
                break;
            case DType.BF16:
                Split(n, 8, (a, b) =>
                {
                    ushort* x = (ushort*)src;
                    for (long i = a; i < b; i++) dst[i] = BitConverter.Int32BitsToSingle(x[i] << 16);
                });
                break;
            default:
                throw new NotSupportedException($"dtype {dtype} is not a floating-point parameter dtype");
        }
    }

    /// <summary>Rounds <paramref name="n"/> float64 values to F64 or F32 (round to nearest even, as libtorch does).</summary>
    public static void FromFloat64(IntPtr source, long n, DType dtype, IntPtr destination)
    {
        double* x = (double*)source;
        switch (dtype)
        {
            case DType.F64:
                Buffer.MemoryCopy(x, (void*)destination, n * sizeof(double), n * sizeof(double));
                break;
            case DType.F32:
                Split(n, 8, (a, b) => { float* y = (float*)destination; for (long i = a; i < b; i++) y[i] = (float)x[i]; });
                break;
            default:
                throw new NotSupportedException($"dtype {dtype}: the raw float64 conversion writes F64 or F32 only");
        }
    }
}
