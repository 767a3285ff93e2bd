using GaugeTorch.SafeTensors;
using static TorchSharp.torch;

namespace GaugeTorch.Canonical.Llama;

/// <summary>
/// The permutations of the LLaMA-family canonical form as plain loops over contiguous float64 rows, split over two
/// threads. libtorch's index_select along the last dimension of a [2048, 8192] matrix (the down_proj unit order, the
/// residual frame of gate and up) took ~10 ns per element on this host (measured with the phase clock); a gather
/// within each row here is a sequential pass over rows that fit in cache.
/// </summary>
public static unsafe class LlamaKernels
{
    private static void Rows(long n, Action<long, long> body)
    {
        if (n < 64 || Environment.ProcessorCount < 2) { body(0, n); return; }
        long mid = n / 2;
        Parallel.Invoke(() => body(0, mid), () => body(mid, n));
    }

    /// <summary>out[i, j] = x[i, index[j]]·scale[j] for a float64 matrix x [m, n] (scale null: 1).</summary>
    public static Tensor GatherColumns(Tensor x, long[] index, double[]? scale = null)
    {
        var src = x.is_contiguous() ? x : x.contiguous();
        long m = src.shape[0], n = src.shape[1];
        if (index.Length != n) throw new ArgumentException("index length must equal the column count");
        var dst = empty(m, index.Length, ScalarType.Float64);
        double* s = (double*)NativeTensorAccess.DataPointer(src);
        double* d = (double*)NativeTensorAccess.DataPointer(dst);
        var idx = index;
        var sc = scale;
        Rows(m, (a, b) =>
        {
            for (long i = a; i < b; i++)
            {
                double* row = s + i * n;
                double* o = d + i * n;
                if (sc is null) for (long j = 0; j < n; j++) o[j] = row[idx[j]];
                else for (long j = 0; j < n; j++) o[j] = row[idx[j]] * sc[j];
            }
        });
        GC.KeepAlive(src);
        return dst;
    }

    /// <summary>out[i, j] = x[i, index[j]]·sign[j] for a float32 matrix x [m, n] (exact: a signed permutation of stored values).</summary>
    public static Tensor GatherColumns32(Tensor x, long[] index, double[] sign)
    {
        var src = x.is_contiguous() ? x : x.contiguous();
        long m = src.shape[0], n = src.shape[1];
        if (index.Length != n) throw new ArgumentException("index length must equal the column count");
        var dst = empty(m, n, ScalarType.Float32);
        float* s = (float*)NativeTensorAccess.DataPointer(src);
        float* d = (float*)NativeTensorAccess.DataPointer(dst);
        var idx = index;
        var sg = sign.Select(x => (float)x).ToArray();
        Rows(m, (a, b) =>
        {
            for (long i = a; i < b; i++)
            {
                float* row = s + i * n;
                float* o = d + i * n;
                for (long j = 0; j < n; j++) o[j] = row[idx[j]] * sg[j];
            }
        });
        GC.KeepAlive(src);
        return dst;
    }

    /// <summary>out[i, :] = x[index[i], :]·scale[i] for a float64 matrix x [m, n] (scale null: 1).</summary>
    public static Tensor GatherRows(Tensor x, long[] index, double[]? scale = null)
    {
        var src = x.is_contiguous() ? x : x.contiguous();
        long n = src.shape[1];
        var dst = empty(index.Length, n, ScalarType.Float64);
        double* s = (double*)NativeTensorAccess.DataPointer(src);
        double* d = (double*)NativeTensorAccess.DataPointer(dst);
        var idx = index;
        var sc = scale;
        Rows(index.Length, (a, b) =>
        {
            for (long i = a; i < b; i++)
            {
                double* row = s + idx[i] * n;
                double* o = d + i * n;
                if (sc is null) Buffer.MemoryCopy(row, o, n * sizeof(double), n * sizeof(double));
                else { double f = sc[i]; for (long j = 0; j < n; j++) o[j] = row[j] * f; }
            }
        });
        GC.KeepAlive(src);
        return dst;
    }
}
