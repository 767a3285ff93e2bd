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

    /// <summary>
    /// Per column of a float32 or float64 matrix x [m, n]: Σ x² (accumulated in float64), the largest entry and the
    /// smallest, in one pass over the rows (two threads, each over half of the columns).
    /// </summary>
    public static (double[] SumSquares, double[] Max, double[] Min) ColumnStats(Tensor x)
    {
        var src = x.is_contiguous() ? x : x.contiguous();
        long m = src.shape[0], n = src.shape[1];
        var sq = new double[n];
        var hi = Enumerable.Repeat(double.NegativeInfinity, (int)n).ToArray();
        var lo = Enumerable.Repeat(double.PositiveInfinity, (int)n).ToArray();
        bool f32 = src.dtype == ScalarType.Float32;
        if (!f32 && src.dtype != ScalarType.Float64) throw new ArgumentException("ColumnStats needs float32 or float64");
        IntPtr data = NativeTensorAccess.DataPointer(src);
        void Body(long c0, long c1)
        {
            for (long i = 0; i < m; i++)
            {
                if (f32)
                {
                    float* row = (float*)data + i * n;
                    for (long j = c0; j < c1; j++) { double v = row[j]; sq[j] += v * v; if (v > hi[j]) hi[j] = v; if (v < lo[j]) lo[j] = v; }
                }
                else
                {
                    double* row = (double*)data + i * n;
                    for (long j = c0; j < c1; j++) { double v = row[j]; sq[j] += v * v; if (v > hi[j]) hi[j] = v; if (v < lo[j]) lo[j] = v; }
                }
            }
        }
        if (n < 64 || Environment.ProcessorCount < 2) Body(0, n);
        else Parallel.Invoke(() => Body(0, n / 2), () => Body(n / 2, n));
        GC.KeepAlive(src);
        return (sq, hi, lo);
    }

    /// <summary>
    /// Per row j of a float64 matrix x [m, n], over the row as the gather would write it (y_k = x[j, index[k]]·scale[k],
    /// in that order): Σ y², max y, min y.
    /// </summary>
    public static (double[] SumSquares, double[] Max, double[] Min) RowStats(Tensor x, long[] index, double[] scale)
    {
        var src = x.is_contiguous() ? x : x.contiguous();
        long m = src.shape[0], n = src.shape[1];
        var sq = new double[m];
        var hi = new double[m];
        var lo = new double[m];
        double* s = (double*)NativeTensorAccess.DataPointer(src);
        var idx = index;
        var sc = scale;
        Rows(m, (a, b) =>
        {
            for (long i = a; i < b; i++)
            {
                double* row = s + i * n;
                double acc = 0, mx = double.NegativeInfinity, mn = double.PositiveInfinity;
                for (long k = 0; k < n; k++)
                {
                    double v = row[idx[k]] * sc[k];
                    acc += v * v;
                    if (v > mx) mx = v;
                    if (v < mn) mn = v;
                }
                sq[i] = acc; hi[i] = mx; lo[i] = mn;
            }
        });
        GC.KeepAlive(src);
        return (sq, hi, lo);
    }

    /// <summary>out[i, j] = x[rowIndex[i], colIndex[j]]·colScale[j]·rowScale[i] for a float64 matrix x (null scales: 1).</summary>
    public static Tensor GatherBoth(Tensor x, long[] rowIndex, double[]? rowScale, long[] colIndex, double[]? colScale)
    {
        var src = x.is_contiguous() ? x : x.contiguous();
        long n = src.shape[1];
        long m2 = rowIndex.Length, n2 = colIndex.Length;
        var dst = empty(m2, n2, ScalarType.Float64);
        double* s = (double*)NativeTensorAccess.DataPointer(src);
        double* d = (double*)NativeTensorAccess.DataPointer(dst);
        var ri = rowIndex; var rs = rowScale; var ci = colIndex; var cs = colScale;
        Rows(m2, (a, b) =>
        {
            for (long i = a; i < b; i++)
            {
                double* row = s + ri[i] * n;
                double* o = d + i * n2;
                double f = rs is null ? 1 : rs[i];
                if (cs is null) for (long j = 0; j < n2; j++) o[j] = row[ci[j]] * f;
                else if (rs is null) for (long j = 0; j < n2; j++) o[j] = row[ci[j]] * cs[j];
                else for (long j = 0; j < n2; j++) o[j] = row[ci[j]] * cs[j] * f;
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
