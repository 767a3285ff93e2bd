using System.Numerics;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using GaugeTorch.SafeTensors;

namespace GaugeTorch.Canonical.Gpt2;

/// <summary>A row-major matrix the kernels read: float32 or float64 data at <see cref="Data"/>.</summary>
internal readonly record struct KernelSource(IntPtr Data, bool IsFloat64);

/// <summary>A row-major matrix the kernels write: float32 or float64 at <see cref="Data"/> (values rounded once, at the store).</summary>
internal readonly record struct KernelTarget(IntPtr Data, bool IsFloat64);

/// <summary>
/// What the sign rule needs of one factor column: the largest positive and largest negative magnitude (and where each
/// first occurs), Σx³ and Σ|x|³.
/// </summary>
public readonly record struct ColumnSignStat(double MaxPositive, double MaxNegative, long FirstPositive, long FirstNegative, double Cubes, double AbsCubes);

/// <summary>
/// Fused float64 passes of the canonical form over big row-major matrices (the steps that are pure elementwise
/// work or permutations), so that each element is read and written as few times as possible. Every kernel splits
/// its work into disjoint halves run on two threads; all arithmetic is float64 (float32 inputs are widened first).
/// </summary>
internal static unsafe class CanonicalKernels
{
    private static readonly int Parts = Math.Max(1, Math.Min(2, Environment.ProcessorCount));

    /// <summary>Runs <paramref name="body"/>(start, end) on <see cref="Parts"/> disjoint ranges of [0, n), cut at multiples of <paramref name="align"/>.</summary>
    private static void Split(long n, long align, Action<long, long> body)
    {
        if (Parts == 1 || n < 2 * align)
        {
            body(0, n);
            return;
        }
        long mid = (n / 2 + align - 1) / align * align;
        Parallel.Invoke(() => body(0, mid), () => body(mid, n));
    }

    /// <summary>
    /// Folds a LayerNorm into a reader [rows, cols]: y_ij = γ_i·x_ij is written to <paramref name="dst"/>, where
    /// column j lies in block b = j / <paramref name="block"/> at dst + b·blockStride + i·rowStride + j mod block
    /// (a head layout, or plain row-major with block = cols); and per column, Σ_i y_ij, Σ_i y_ij² and Σ_i β_i·x_ij
    /// (the bias fold with the unscaled weight) are stored in <paramref name="sum"/>, <paramref name="sumSq"/>, <paramref name="bias"/>.
    /// With <paramref name="dst"/> = 0 only the sums are computed (the folded values are recomputed where needed).
    /// </summary>
    /// <remarks>
    /// <paramref name="rowDst"/> (null: the identity) is the residual permutation of GAUGE.md §5 step 4b: source row i
    /// is written to row rowDst[i]. The sums do not depend on it; a residual negation is folded into γ by the caller.
    /// </remarks>
    public static void FoldColumns(KernelSource src, long rows, long cols, IntPtr gamma, IntPtr beta, IntPtr dst,
        long block, long blockStride, long rowStride, double[] sum, double[] sumSq, double[] bias, int[]? rowDst = null)
    {
        Array.Clear(sum);
        Array.Clear(sumSq);
        Array.Clear(bias);
        double* g = (double*)gamma, be = (double*)beta, o = (double*)dst;
        fixed (double* ps = sum, pq = sumSq, pb = bias)
        {
            double* s = ps, q = pq, b = pb;
            Split(cols, block < cols ? block : 8, (c0, c1) =>
            {
                for (long i = 0; i < rows; i++)
                {
                    double gi = g[i], bi = be[i];
                    var vg = Vector256.Create(gi);
                    var vb = Vector256.Create(bi);
                    for (long j = c0; j < c1;)
                    {
                        long blk = j / block, off = j - blk * block;
                        long n = Math.Min(c1 - j, block - off);
                        double* y = o == null ? null : o + blk * blockStride + (rowDst is null ? i : rowDst[i]) * rowStride + off;
                        double* sj = s + j, qj = q + j, bj = b + j;
                        long t = 0;
                        if (src.IsFloat64)
                        {
                            double* x = (double*)src.Data + i * cols + j;
                            for (; t + 4 <= n; t += 4)
                            {
                                var xv = Vector256.Load(x + t);
                                Accumulate(xv, vg, vb, y == null ? null : y + t, sj + t, qj + t, bj + t);
                            }
                            for (; t < n; t++) Scalar(x[t], gi, bi, y == null ? null : y + t, sj + t, qj + t, bj + t);
                        }
                        else
                        {
                            float* x = (float*)src.Data + i * cols + j;
                            for (; t + 8 <= n; t += 8)
                            {
                                var (lo, hi) = Vector256.Widen(Vector256.Load(x + t));
                                Accumulate(lo, vg, vb, y == null ? null : y + t, sj + t, qj + t, bj + t);
                                Accumulate(hi, vg, vb, y == null ? null : y + t + 4, sj + t + 4, qj + t + 4, bj + t + 4);
                            }
                            for (; t < n; t++) Scalar(x[t], gi, bi, y == null ? null : y + t, sj + t, qj + t, bj + t);
                        }
                        j += n;
                    }
                }
            });
        }
    }

    private static void Accumulate(Vector256<double> x, Vector256<double> g, Vector256<double> b, double* y, double* s, double* q, double* bias)
    {
        var v = x * g;
        if (y != null) v.Store(y);
        (Vector256.Load(s) + v).Store(s);
        (Vector256.Load(q) + v * v).Store(q);
        (Vector256.Load(bias) + x * b).Store(bias);
    }

    private static void Scalar(double x, double g, double b, double* y, double* s, double* q, double* bias)
    {
        double v = x * g;
        if (y != null) *y = v;
        *s += v;
        *q += v * v;
        *bias += x * b;
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

    /// <summary>
    /// Rounds <paramref name="n"/> float64 values to a storage dtype (F64, F32, F16 or BF16), the way libtorch's
    /// <c>to(dtype)</c> does: F16 and BF16 go through float32, and BF16 rounds to nearest even.
    /// </summary>
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
            case DType.F16:
                Split(n, 8, (a, b) => { Half* y = (Half*)destination; for (long i = a; i < b; i++) y[i] = (Half)(float)x[i]; });
                break;
            case DType.BF16:
                Split(n, 8, (a, b) =>
                {
                    ushort* y = (ushort*)destination;
                    for (long i = a; i < b; i++)
                    {
                        float f = (float)x[i];
                        uint bits = BitConverter.SingleToUInt32Bits(f);
                        y[i] = float.IsNaN(f) ? (ushort)0x7FC0 : (ushort)((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
                    }
                });
                break;
            default:
                throw new NotSupportedException($"dtype {dtype} is not a floating-point parameter dtype");
        }
    }

    /// <summary>Per row of [rows, cols]: the mean and the sum of squares after subtracting it.</summary>
    public static void RowStats(KernelSource src, long rows, long cols, double[] mean, double[] centredSq)
    {
        fixed (double* pm = mean, pq = centredSq)
        {
            double* m = pm, q = pq;
            Split(rows, 1, (r0, r1) =>
            {
                var row = new double[cols];
                fixed (double* x = row)
                {
                    for (long r = r0; r < r1; r++)
                    {
                        Widen(src, r * cols, cols, x);
                        double mu = Sum(x, cols) / cols;
                        m[r] = mu;
                        q[r] = CentredSumSq(x, cols, mu);
                    }
                }
            });
        }
    }

    private static void Widen(KernelSource src, long start, long n, double* dst)
    {
        if (src.IsFloat64)
        {
            Buffer.MemoryCopy((double*)src.Data + start, dst, n * sizeof(double), n * sizeof(double));
            return;
        }
        float* x = (float*)src.Data + start;
        long t = 0;
        for (; t + 8 <= n; t += 8)
        {
            var (lo, hi) = Vector256.Widen(Vector256.Load(x + t));
            lo.Store(dst + t);
            hi.Store(dst + t + 4);
        }
        for (; t < n; t++) dst[t] = x[t];
    }

    /// <summary>Sum of n doubles (4-lane vector accumulation).</summary>
    private static double Sum(double* x, long n)
    {
        var acc = Vector256<double>.Zero;
        long t = 0;
        for (; t + 4 <= n; t += 4) acc += Vector256.Load(x + t);
        double s = Vector256.Sum(acc);
        for (; t < n; t++) s += x[t];
        return s;
    }

    /// <summary>Σ (x − m)² over n doubles.</summary>
    private static double CentredSumSq(double* x, long n, double m)
    {
        var acc = Vector256<double>.Zero;
        var vm = Vector256.Create(m);
        long t = 0;
        for (; t + 4 <= n; t += 4)
        {
            var e = Vector256.Load(x + t) - vm;
            acc += e * e;
        }
        double s = Vector256.Sum(acc);
        for (; t < n; t++) { double e = x[t] - m; s += e * e; }
        return s;
    }

    /// <summary>y[j] = round_T(a·x[j] − b) for n values (T = float or double; one rounding, at the store).</summary>
    private static void ScaleShiftStore<T>(double* x, long n, double a, double b, T* y) where T : unmanaged, IFloatingPointIeee754<T>
    {
        var va = Vector256.Create(a);
        var vb = Vector256.Create(b);
        long t = 0;
        if (typeof(T) == typeof(float))
        {
            for (; t + 8 <= n; t += 8)
                Vector256.Narrow(Vector256.Load(x + t) * va - vb, Vector256.Load(x + t + 4) * va - vb).Store((float*)y + t);
        }
        else
        {
            for (; t + 4 <= n; t += 4) (Vector256.Load(x + t) * va - vb).Store((double*)y + t);
        }
        for (; t < n; t++) y[t] = T.CreateTruncating(a * x[t] - b);
    }

    /// <summary>
    /// The folded, centred, permuted reader: dst[i, p] = γ_i·src[i, order[p]] − mean[order[p]] for a source [rows, cols]
    /// (the same float64 operations as folding first and centring after, so the values are identical).
    /// </summary>
    /// <remarks>With <paramref name="rowDst"/> (the residual permutation) source row i goes to row rowDst[i].</remarks>
    public static void GatherColumnsCentred(KernelSource src, IntPtr gamma, long rows, long cols, int[] order, double[] mean, KernelTarget destination, int[]? rowDst = null)
    {
        if (destination.IsFloat64) GatherColumnsCentred<double>(src, gamma, rows, cols, order, mean, destination.Data, rowDst);
        else GatherColumnsCentred<float>(src, gamma, rows, cols, order, mean, destination.Data, rowDst);
    }

    private static void GatherColumnsCentred<T>(KernelSource src, IntPtr gamma, long rows, long cols, int[] order, double[] mean, IntPtr destination, int[]? rowDst)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        T* t = (T*)destination;
        double* g = (double*)gamma;
        var meanP = new double[cols];
        for (int p = 0; p < cols; p++) meanP[p] = mean[order[p]];
        Split(rows, 1, (r0, r1) =>
        {
            fixed (int* ord = order)
            fixed (double* mp = meanP)
            {
                for (long i = r0; i < r1; i++)
                {
                    double gi = g[i];
                    T* tr = t + (rowDst is null ? i : rowDst[i]) * cols;
                    var vg = Vector256.Create(gi);
                    long p = 0;
                    if (src.IsFloat64)
                    {
                        double* sr = (double*)src.Data + i * cols;
                        if (Avx2.IsSupported)
                            for (; p + 8 <= cols; p += 8)
                            {
                                var a = Avx2.GatherVector256(sr, Vector128.Load(ord + p), 8) * vg - Vector256.Load(mp + p);
                                var b = Avx2.GatherVector256(sr, Vector128.Load(ord + p + 4), 8) * vg - Vector256.Load(mp + p + 4);
                                Store8(a, b, tr + p);
                            }
                        for (; p < cols; p++) tr[p] = T.CreateTruncating(sr[ord[p]] * gi - mp[p]);
                    }
                    else
                    {
                        float* sr = (float*)src.Data + i * cols;
                        if (Avx2.IsSupported)
                            for (; p + 8 <= cols; p += 8)
                            {
                                var (lo, hi) = Vector256.Widen(Avx2.GatherVector256(sr, Vector256.Load(ord + p), 4));
                                Store8(lo * vg - Vector256.Load(mp + p), hi * vg - Vector256.Load(mp + p + 4), tr + p);
                            }
                        for (; p < cols; p++) tr[p] = T.CreateTruncating(sr[ord[p]] * gi - mp[p]);
                    }
                }
            }
        });
    }

    /// <summary>
    /// dst[p, j] = σ·(src[order[p], colPerm[j]] − mean[order[p]]) ([rows, cols]): the centred, permuted writer, its
    /// columns in the residual frame of step 4b (<paramref name="colPerm"/> null and σ = 1: the identity frame).
    /// </summary>
    public static void GatherRowsCentred(KernelSource src, long rows, long cols, int[] order, double[] mean, KernelTarget destination, int[]? colPerm = null, double sign = 1.0)
    {
        if (destination.IsFloat64) GatherRowsCentred<double>(src, rows, cols, order, mean, destination.Data, colPerm, sign);
        else GatherRowsCentred<float>(src, rows, cols, order, mean, destination.Data, colPerm, sign);
    }

    private static void GatherRowsCentred<T>(KernelSource src, long rows, long cols, int[] order, double[] mean, IntPtr destination, int[]? colPerm, double sign)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        T* t = (T*)destination;
        Split(rows, 1, (p0, p1) =>
        {
            var row = new double[cols];
            fixed (double* x = row)
            fixed (int* perm = colPerm)
            {
                for (long p = p0; p < p1; p++)
                {
                    int u = order[p];
                    double m = mean[u];
                    T* tr = t + p * cols;
                    if (perm == null) Widen(src, u * cols, cols, x);
                    else WidenGather(src, u * cols, cols, perm, x);
                    // σ·x − σ·m equals σ·(x − m) bit for bit (negation is exact).
                    ScaleShiftStore(x, cols, sign, sign * m, tr);
                }
            }
        });
    }

    /// <summary>dst[j] = src[start + perm[j]] widened to float64, j &lt; n (AVX2 gathers; the row is in cache).</summary>
    private static void WidenGather(KernelSource src, long start, long n, int* perm, double* dst)
    {
        long t = 0;
        if (src.IsFloat64)
        {
            double* x = (double*)src.Data + start;
            if (Avx2.IsSupported)
                for (; t + 4 <= n; t += 4) Avx2.GatherVector256(x, Vector128.Load(perm + t), 8).Store(dst + t);
            for (; t < n; t++) dst[t] = x[perm[t]];
        }
        else
        {
            float* x = (float*)src.Data + start;
            if (Avx2.IsSupported)
                for (; t + 8 <= n; t += 8)
                {
                    var (lo, hi) = Vector256.Widen(Avx2.GatherVector256(x, Vector256.Load(perm + t), 4));
                    lo.Store(dst + t);
                    hi.Store(dst + t + 4);
                }
            for (; t < n; t++) dst[t] = x[perm[t]];
        }
    }

    /// <summary>
    /// Converts a stored matrix [rows, cols] (F64, F32, F16 or BF16) to float64 with its columns in the residual frame:
    /// dst[i, j] = σ·src[i, colPerm[j]].
    /// </summary>
    public static void ToFloat64Columns(IntPtr src, DType dtype, long rows, long cols, int[] colPerm, double sign, IntPtr destination)
    {
        double* dst = (double*)destination;
        switch (dtype)
        {
            case DType.F64:
            case DType.F32:
                var source = new KernelSource(src, dtype == DType.F64);
                Split(rows, 1, (r0, r1) =>
                {
                    fixed (int* perm = colPerm)
                        for (long i = r0; i < r1; i++)
                        {
                            double* y = dst + i * cols;
                            WidenGather(source, i * cols, cols, perm, y);
                            for (long j = 0; j < cols; j++) y[j] *= sign;
                        }
                });
                break;
            case DType.F16:
                Split(rows, 1, (r0, r1) => { Half* x = (Half*)src; for (long i = r0; i < r1; i++) for (long j = 0; j < cols; j++) dst[i * cols + j] = sign * (double)x[i * cols + colPerm[j]]; });
                break;
            case DType.BF16:
                Split(rows, 1, (r0, r1) =>
                {
                    ushort* x = (ushort*)src;
                    for (long i = r0; i < r1; i++)
                        for (long j = 0; j < cols; j++) dst[i * cols + j] = sign * BitConverter.Int32BitsToSingle(x[i * cols + colPerm[j]] << 16);
                });
                break;
            default:
                throw new NotSupportedException($"dtype {dtype} is not a floating-point parameter dtype");
        }
    }

    /// <summary>
    /// The sign-rule statistics (<see cref="ColumnSignStat"/>) of every column of <paramref name="batch"/> contiguous
    /// float64 factors [rows, r], row-major [batch, r]. One pass finds the extremes (as cheap as the plain
    /// largest-magnitude rule); Σx³ and Σ|x|³ are computed in a second pass only for the columns whose two extremes agree
    /// within <paramref name="cubesWithin"/> (relative), the only ones whose sign the third moment can decide; for the
    /// others they are 0. Measured on gpt2-xl: the third moment of every column cost 1.7 s of 26 s.
    /// </summary>
    public static ColumnSignStat[] ColumnSignStats(IntPtr data, long batch, long rows, long r, double cubesWithin = double.PositiveInfinity)
    {
        var stats = new ColumnSignStat[batch * r];
        double* x0 = (double*)data;
        Split(batch, 1, (b0, b1) =>
        {
            var pos = new double[r]; var neg = new double[r];
            var ipos = new long[r]; var ineg = new long[r];
            var cub = new double[r]; var acub = new double[r];
            var need = new bool[r];
            for (long b = b0; b < b1; b++)
            {
                Array.Clear(pos); Array.Clear(neg); Array.Fill(ipos, long.MaxValue); Array.Fill(ineg, long.MaxValue);
                double* x = x0 + b * rows * r;
                for (long i = 0; i < rows; i++)
                {
                    double* row = x + i * r;
                    for (long k = 0; k < r; k++)
                    {
                        double v = row[k];
                        if (v > pos[k]) { pos[k] = v; ipos[k] = i; }
                        else if (-v > neg[k]) { neg[k] = -v; ineg[k] = i; }
                    }
                }
                bool any = false;
                for (long k = 0; k < r; k++)
                {
                    double m = Math.Max(pos[k], neg[k]);
                    need[k] = m > 0 && Math.Abs(pos[k] - neg[k]) <= cubesWithin * m;
                    any |= need[k];
                }
                Array.Clear(cub); Array.Clear(acub);
                if (any)
                    for (long i = 0; i < rows; i++)
                    {
                        double* row = x + i * r;
                        for (long k = 0; k < r; k++)
                        {
                            if (!need[k]) continue;
                            double v = row[k], c = v * v * v;
                            cub[k] += c;
                            acub[k] += Math.Abs(c);
                        }
                    }
                for (long k = 0; k < r; k++) stats[b * r + k] = new ColumnSignStat(pos[k], neg[k], ipos[k], ineg[k], cub[k], acub[k]);
            }
        });
        return stats;
    }

    /// <summary>
    /// Writes the canonical attention tensors, head order[p] at position p with its signs:
    /// c_attn.weight [d, 3d] (Q | K | V blocks of the factors [3h, d+1, dk]), c_attn.bias [3d] (row d of the
    /// query factors; key and value biases are 0) and c_proj.weight [d, d] (rows of newO [h, dk, d]).
    /// The bias is always float64.
    /// </summary>
    public static void AssembleAttention(IntPtr qkv, IntPtr newO, long h, long d, long dk, int[] order, double[] signQ, double[] signV,
        KernelTarget attnW, IntPtr attnB, KernelTarget projW)
    {
        if (attnW.IsFloat64) AssembleQkv<double>(qkv, h, d, dk, order, signQ, signV, attnW.Data);
        else AssembleQkv<float>(qkv, h, d, dk, order, signQ, signV, attnW.Data);
        if (projW.IsFloat64) AssembleO<double>(newO, h, d, dk, order, signV, projW.Data);
        else AssembleO<float>(newO, h, d, dk, order, signV, projW.Data);
        double* f = (double*)qkv, bq = (double*)attnB;
        long headStride = (d + 1) * dk;
        for (long p = 0; p < h; p++)
        {
            long src = order[p];
            for (long k = 0; k < dk; k++) bq[p * dk + k] = signQ[src * dk + k] * f[src * headStride + d * dk + k];
        }
        for (long k = d; k < 3 * d; k++) bq[k] = 0;
    }

    private static void AssembleQkv<T>(IntPtr qkv, long h, long d, long dk, int[] order, double[] signQ, double[] signV, IntPtr attnW)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        double* f = (double*)qkv;
        T* w = (T*)attnW;
        long headStride = (d + 1) * dk;
        Split(d, 1, (i0, i1) =>
        {
            for (long i = i0; i < i1; i++)
            {
                T* row = w + i * 3 * d;
                for (long s = 0; s < 3; s++)
                {
                    double[] sign = s == 2 ? signV : signQ;
                    for (long p = 0; p < h; p++)
                    {
                        long src = order[p];
                        double* x = f + (s * h + src) * headStride + i * dk;
                        T* y = row + s * d + p * dk;
                        fixed (double* sg = &sign[src * dk]) SignedStore(x, sg, dk, y);
                    }
                }
            }
        });
    }

    /// <summary>Stores 8 values (two vectors of 4 doubles) as T, rounding once.</summary>
    private static void Store8<T>(Vector256<double> a, Vector256<double> b, T* y) where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (typeof(T) == typeof(float)) Vector256.Narrow(a, b).Store((float*)y);
        else
        {
            a.Store((double*)y);
            b.Store((double*)y + 4);
        }
    }

    /// <summary>y[k] = round_T(sign[k]·x[k]) for n values.</summary>
    private static void SignedStore<T>(double* x, double* sign, long n, T* y) where T : unmanaged, IFloatingPointIeee754<T>
    {
        long t = 0;
        if (typeof(T) == typeof(float))
        {
            for (; t + 8 <= n; t += 8)
                Vector256.Narrow(Vector256.Load(x + t) * Vector256.Load(sign + t), Vector256.Load(x + t + 4) * Vector256.Load(sign + t + 4)).Store((float*)y + t);
        }
        else
        {
            for (; t + 4 <= n; t += 4) (Vector256.Load(x + t) * Vector256.Load(sign + t)).Store((double*)y + t);
        }
        for (; t < n; t++) y[t] = T.CreateTruncating(sign[t] * x[t]);
    }

    private static void AssembleO<T>(IntPtr newO, long h, long d, long dk, int[] order, double[] signV, IntPtr projW)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        double* o = (double*)newO;
        T* pw = (T*)projW;
        Split(h, 1, (p0, p1) =>
        {
            for (long p = p0; p < p1; p++)
            {
                long src = order[p];
                for (long k = 0; k < dk; k++)
                {
                    double sg = signV[src * dk + k];
                    double* x = o + (src * dk + k) * d;
                    T* y = pw + (p * dk + k) * d;
                    ScaleShiftStore(x, d, sg, 0.0, y);
                }
            }
        });
    }
}
