using GaugeTorch.SafeTensors;

namespace GaugeTorch.Canonical.Llama;

/// <summary>One stored element type as the stream kernels read (widened exactly to float64) and write it (rounded once).</summary>
internal interface IStoredElement
{
    static abstract DType DType { get; }
    static abstract unsafe double Get(byte* p, long i);
    /// <summary>Rounds as libtorch's <c>to(dtype)</c> from float64 does: F16 and BF16 through float32, to nearest even.</summary>
    static abstract unsafe void Put(byte* p, long i, double v);
}

internal struct F64Element : IStoredElement
{
    public static DType DType => DType.F64;
    public static unsafe double Get(byte* p, long i) => ((double*)p)[i];
    public static unsafe void Put(byte* p, long i, double v) => ((double*)p)[i] = v;
}

internal struct F32Element : IStoredElement
{
    public static DType DType => DType.F32;
    public static unsafe double Get(byte* p, long i) => ((float*)p)[i];
    public static unsafe void Put(byte* p, long i, double v) => ((float*)p)[i] = (float)v;
}

internal struct F16Element : IStoredElement
{
    public static DType DType => DType.F16;
    public static unsafe double Get(byte* p, long i) => (double)((Half*)p)[i];
    public static unsafe void Put(byte* p, long i, double v) => ((Half*)p)[i] = (Half)(float)v;
}

internal struct BF16Element : IStoredElement
{
    public static DType DType => DType.BF16;
    public static unsafe double Get(byte* p, long i) => BitConverter.Int32BitsToSingle(((ushort*)p)[i] << 16);
    public static unsafe void Put(byte* p, long i, double v)
    {
        float f = (float)v;
        uint bits = BitConverter.SingleToUInt32Bits(f);
        ((ushort*)p)[i] = float.IsNaN(f) ? (ushort)0x7FC0 : (ushort)((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
    }
}

/// <summary>
/// The LLaMA-family canonical form's big passes straight from a tensor's stored bytes (the memory map) into the
/// export's staging buffer in the output dtype, for the tied (signed-permutation) frame: no float64 copy of the MLP
/// matrices or the embedding is ever made. Each kernel does exactly the float64 arithmetic of its counterpart in
/// <see cref="LlamaKernels"/> in the same order (the stored values widen exactly, and the single rounding at the store
/// is the one <see cref="GaugeTorch.Pipeline.ExportWriter"/> applies), so the bytes written are the same; only the
/// float64 intermediate tensors, a read (storage → float64), a finite-check pass and a conversion pass (float64 →
/// storage) go away. The finite check is folded into the statistics: a NaN or an infinity in a matrix makes its sums
/// of squares non-finite (every scale factor is finite), and the caller then runs the named check.
/// </summary>
internal static unsafe class LlamaStreamKernels
{
    private static void Rows(long n, Action<long, long> body)
    {
        if (n < 64 || Environment.ProcessorCount < 2) { body(0, n); return; }
        long mid = n / 2;
        Parallel.Invoke(() => body(0, mid), () => body(mid, n));
    }

    /// <summary>
    /// Per row i of the stored matrix [m, n] at <paramref name="src"/>, over y_k = x[i, index[k]]·scale[k] in that order:
    /// Σ y² and (with <paramref name="extremes"/>) max y and min y (<see cref="LlamaKernels.RowStats"/>).
    /// </summary>
    public static (double[] SumSquares, double[] Max, double[] Min) RowStats<T>(IntPtr src, long m, long n, long[] index, double[] scale, bool extremes)
        where T : struct, IStoredElement
    {
        var sq = new double[m];
        var hi = new double[m];
        var lo = new double[m];
        int size = T.DType.Size();
        Rows(m, (a, b) =>
        {
            fixed (long* idx = index)
            fixed (double* sc = scale)
            {
                for (long i = a; i < b; i++)
                {
                    byte* row = (byte*)src + i * n * size;
                    double acc = 0, mx = double.NegativeInfinity, mn = double.PositiveInfinity;
                    if (extremes)
                        for (long k = 0; k < n; k++)
                        {
                            double v = T.Get(row, idx[k]) * sc[k];
                            acc += v * v;
                            if (v > mx) mx = v;
                            if (v < mn) mn = v;
                        }
                    else
                        for (long k = 0; k < n; k++)
                        {
                            double v = T.Get(row, idx[k]) * sc[k];
                            acc += v * v;
                        }
                    sq[i] = acc; hi[i] = mx; lo[i] = mn;
                }
            }
        });
        return (sq, hi, lo);
    }

    /// <summary>Per column of the stored matrix [m, n]: Σ x², max x, min x, rows in order (<see cref="LlamaKernels.ColumnStats"/>).</summary>
    public static (double[] SumSquares, double[] Max, double[] Min) ColumnStats<T>(IntPtr src, long m, long n)
        where T : struct, IStoredElement
    {
        var sq = new double[n];
        var hi = new double[n];
        var lo = new double[n];
        Array.Fill(hi, double.NegativeInfinity);
        Array.Fill(lo, double.PositiveInfinity);
        int size = T.DType.Size();
        void Body(long c0, long c1)
        {
            fixed (double* q = sq, h = hi, l = lo)
            {
                for (long i = 0; i < m; i++)
                {
                    byte* row = (byte*)src + i * n * size;
                    for (long j = c0; j < c1; j++)
                    {
                        double v = T.Get(row, j);
                        q[j] += v * v;
                        if (v > h[j]) h[j] = v;
                        if (v < l[j]) l[j] = v;
                    }
                }
            }
        }
        if (n < 64 || Environment.ProcessorCount < 2) Body(0, n);
        else Parallel.Invoke(() => Body(0, n / 2), () => Body(n / 2, n));
        return (sq, hi, lo);
    }

    /// <summary>
    /// dst[i, j] = x[rowIndex[i], colIndex[j]]·colScale[j]·rowScale[i] from the stored matrix x (n columns) into
    /// <typeparamref name="TOut"/> at <paramref name="dst"/> [rowIndex.Length, colIndex.Length], with the products of
    /// <see cref="LlamaKernels.GatherBoth"/> (null scales: 1, not multiplied).
    /// </summary>
    public static void GatherBoth<TIn, TOut>(IntPtr src, long n, long[] rowIndex, double[]? rowScale, long[] colIndex, double[]? colScale, IntPtr dst)
        where TIn : struct, IStoredElement where TOut : struct, IStoredElement
    {
        long m2 = rowIndex.Length, n2 = colIndex.Length;
        int inSize = TIn.DType.Size(), outSize = TOut.DType.Size();
        var ri = rowIndex; var rs = rowScale; var ci = colIndex; var cs = colScale;
        Rows(m2, (a, b) =>
        {
            fixed (long* cix = ci)
            fixed (double* csx = cs)
            {
                for (long i = a; i < b; i++)
                {
                    byte* row = (byte*)src + ri[i] * n * inSize;
                    byte* o = (byte*)dst + i * n2 * outSize;
                    double f = rs is null ? 1 : rs[i];
                    if (csx == null) for (long j = 0; j < n2; j++) TOut.Put(o, j, TIn.Get(row, cix[j]) * f);
                    else if (rs is null) for (long j = 0; j < n2; j++) TOut.Put(o, j, TIn.Get(row, cix[j]) * csx[j]);
                    else for (long j = 0; j < n2; j++) TOut.Put(o, j, TIn.Get(row, cix[j]) * csx[j] * f);
                }
            }
        });
    }

    /// <summary>
    /// The tied embedding in the residual frame: dst[i, j] = x[i, index[j]]·sign[j] (a signed permutation of stored
    /// values, exact in every dtype, as <see cref="LlamaKernels.GatherColumns32"/> / <see cref="LlamaKernels.GatherColumns"/>
    /// compute it), converted to <typeparamref name="TOut"/>.
    /// </summary>
    public static void SignedPermuteColumns<TIn, TOut>(IntPtr src, long m, long n, long[] index, double[] sign, IntPtr dst)
        where TIn : struct, IStoredElement where TOut : struct, IStoredElement
    {
        int inSize = TIn.DType.Size(), outSize = TOut.DType.Size();
        Rows(m, (a, b) =>
        {
            fixed (long* idx = index)
            fixed (double* sg = sign)
            {
                for (long i = a; i < b; i++)
                {
                    byte* row = (byte*)src + i * n * inSize;
                    byte* o = (byte*)dst + i * n * outSize;
                    for (long j = 0; j < n; j++) TOut.Put(o, j, TIn.Get(row, idx[j]) * sg[j]);
                }
            }
        });
    }
}

/// <summary>Runtime dispatch of <see cref="LlamaStreamKernels"/> on the stored and the output dtype.</summary>
internal static class LlamaStreamDispatch
{
    /// <summary>Whether the stream kernels handle stored dtype <paramref name="stored"/> written as <paramref name="output"/>.</summary>
    public static bool Supports(DType stored, DType output) => stored.IsFloat() && (output == stored || output == DType.F64);

    public static (double[] SumSquares, double[] Max, double[] Min) RowStats(DType t, IntPtr src, long m, long n, long[] index, double[] scale, bool extremes) => t switch
    {
        DType.F64 => LlamaStreamKernels.RowStats<F64Element>(src, m, n, index, scale, extremes),
        DType.F32 => LlamaStreamKernels.RowStats<F32Element>(src, m, n, index, scale, extremes),
        DType.F16 => LlamaStreamKernels.RowStats<F16Element>(src, m, n, index, scale, extremes),
        DType.BF16 => LlamaStreamKernels.RowStats<BF16Element>(src, m, n, index, scale, extremes),
        _ => throw new NotSupportedException($"dtype {t}"),
    };

    public static (double[] SumSquares, double[] Max, double[] Min) ColumnStats(DType t, IntPtr src, long m, long n) => t switch
    {
        DType.F64 => LlamaStreamKernels.ColumnStats<F64Element>(src, m, n),
        DType.F32 => LlamaStreamKernels.ColumnStats<F32Element>(src, m, n),
        DType.F16 => LlamaStreamKernels.ColumnStats<F16Element>(src, m, n),
        DType.BF16 => LlamaStreamKernels.ColumnStats<BF16Element>(src, m, n),
        _ => throw new NotSupportedException($"dtype {t}"),
    };

    public static void GatherBoth(DType stored, DType output, IntPtr src, long n, long[] rowIndex, double[]? rowScale, long[] colIndex, double[]? colScale, IntPtr dst)
    {
        switch (stored, output)
        {
            case (DType.F64, DType.F64): LlamaStreamKernels.GatherBoth<F64Element, F64Element>(src, n, rowIndex, rowScale, colIndex, colScale, dst); break;
            case (DType.F32, DType.F32): LlamaStreamKernels.GatherBoth<F32Element, F32Element>(src, n, rowIndex, rowScale, colIndex, colScale, dst); break;
            case (DType.F32, DType.F64): LlamaStreamKernels.GatherBoth<F32Element, F64Element>(src, n, rowIndex, rowScale, colIndex, colScale, dst); break;
            case (DType.F16, DType.F16): LlamaStreamKernels.GatherBoth<F16Element, F16Element>(src, n, rowIndex, rowScale, colIndex, colScale, dst); break;
            case (DType.F16, DType.F64): LlamaStreamKernels.GatherBoth<F16Element, F64Element>(src, n, rowIndex, rowScale, colIndex, colScale, dst); break;
            case (DType.BF16, DType.BF16): LlamaStreamKernels.GatherBoth<BF16Element, BF16Element>(src, n, rowIndex, rowScale, colIndex, colScale, dst); break;
            case (DType.BF16, DType.F64): LlamaStreamKernels.GatherBoth<BF16Element, F64Element>(src, n, rowIndex, rowScale, colIndex, colScale, dst); break;
            default: throw new NotSupportedException($"stored {stored} written as {output}");
        }
    }

    public static void SignedPermuteColumns(DType stored, DType output, IntPtr src, long m, long n, long[] index, double[] sign, IntPtr dst)
    {
        switch (stored, output)
        {
            case (DType.F64, DType.F64): LlamaStreamKernels.SignedPermuteColumns<F64Element, F64Element>(src, m, n, index, sign, dst); break;
            case (DType.F32, DType.F32): LlamaStreamKernels.SignedPermuteColumns<F32Element, F32Element>(src, m, n, index, sign, dst); break;
            case (DType.F32, DType.F64): LlamaStreamKernels.SignedPermuteColumns<F32Element, F64Element>(src, m, n, index, sign, dst); break;
            case (DType.F16, DType.F16): LlamaStreamKernels.SignedPermuteColumns<F16Element, F16Element>(src, m, n, index, sign, dst); break;
            case (DType.F16, DType.F64): LlamaStreamKernels.SignedPermuteColumns<F16Element, F64Element>(src, m, n, index, sign, dst); break;
            case (DType.BF16, DType.BF16): LlamaStreamKernels.SignedPermuteColumns<BF16Element, BF16Element>(src, m, n, index, sign, dst); break;
            case (DType.BF16, DType.F64): LlamaStreamKernels.SignedPermuteColumns<BF16Element, F64Element>(src, m, n, index, sign, dst); break;
            default: throw new NotSupportedException($"stored {stored} written as {output}");
        }
    }
}
