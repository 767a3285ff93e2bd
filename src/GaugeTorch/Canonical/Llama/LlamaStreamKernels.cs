using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
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
/// <see cref="LlamaKernels"/> / <see cref="LlamaCanonicalForm"/>: the same products, each sum accumulated in the same
/// order (vector lanes run over independent sums, never within one), the stored values widened exactly and rounded
/// once at the store as <see cref="GaugeTorch.Pipeline.ExportWriter"/> rounds (float32 RNE, then BF16 RNE), so the
/// bytes written are the same; only the float64 intermediates, a read (storage → float64), a finite-check pass and
/// a conversion pass (float64 → storage) go away. The finite check is folded into the statistics: a NaN or an
/// infinity makes its sums of squares non-finite (every scale factor is finite), and the caller then runs the named
/// check. The hot loops are marked AggressiveOptimization: under tiered compilation the first layers otherwise ran
/// tier-0 and on-stack-replacement code (seen in perf: three tiers of each kernel among the top symbols).
/// </summary>
internal static unsafe class LlamaStreamKernels
{
    private static void Rows(long n, Action<long, long> body)
    {
        if (n < 64 || Environment.ProcessorCount < 2) { body(0, n); return; }
        long mid = n / 2;
        Parallel.Invoke(() => body(0, mid), () => body(mid, n));
    }

    private static bool Vectors => Avx2.IsSupported;

    // ------------------------------------------------------------ vector loads and stores (AVX2)

    /// <summary>Stored elements p[0..8) widened exactly to two float64 vectors (F32 and BF16; callers check).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Load8<T>(byte* p, out Vector256<double> a, out Vector256<double> b) where T : struct, IStoredElement
    {
        if (typeof(T) == typeof(F64Element))
        {
            a = Avx.LoadVector256((double*)p);
            b = Avx.LoadVector256((double*)p + 4);
            return;
        }
        Vector256<float> f;
        if (typeof(T) == typeof(F32Element)) f = Avx.LoadVector256((float*)p);
        else
        {
            var u = Avx2.ConvertToVector256Int32(Sse2.LoadVector128((ushort*)p));   // zero-extends
            f = Avx2.ShiftLeftLogical(u, 16).AsSingle();
        }
        a = Avx.ConvertToVector256Double(f.GetLower());
        b = Avx.ConvertToVector256Double(f.GetUpper());
    }

    /// <summary>Four float64 values rounded to <typeparamref name="T"/> at p[0..4) (as <see cref="IStoredElement.Put"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store4<T>(Vector256<double> v, byte* p) where T : struct, IStoredElement
    {
        if (typeof(T) == typeof(F64Element)) { Avx.Store((double*)p, v); return; }
        var f = Avx.ConvertToVector128Single(v);                                            // cvtpd2ps: RNE, as (float)
        if (typeof(T) == typeof(F32Element)) { Sse.Store((float*)p, f); return; }
        var bits = f.AsUInt32();
        var r = Sse2.ShiftRightLogical(Sse2.Add(Sse2.Add(bits, Vector128.Create(0x7FFFu)), Sse2.And(Sse2.ShiftRightLogical(bits, 16), Vector128.Create(1u))), 16);
        var nan = Sse.CompareUnordered(f, f).AsUInt32();
        r = Sse41.BlendVariable(r, Vector128.Create(0x7FC0u), nan);
        var packed = Sse41.PackUnsignedSaturate(r.AsInt32(), r.AsInt32());
        Sse2.StoreScalar((long*)p, packed.AsInt64());
    }

    private static bool VectorType<T>() where T : struct, IStoredElement =>
        typeof(T) == typeof(F32Element) || typeof(T) == typeof(BF16Element) || typeof(T) == typeof(F64Element);

    // ------------------------------------------------------------ MLP: gate and up

    /// <summary>
    /// The statistics pass over gate or up [m, n] stored at <paramref name="src"/>, which also produces each row as
    /// it will be written before the unit scale: y_k = x[u, index[k]]·scale[k] (the frame and the folded gain). Per
    /// row: Σ y² in k order and (<paramref name="extremes"/>) max y, min y (<see cref="LlamaKernels.RowStats"/>). The rows
    /// go to <paramref name="rowsOut"/> [m, n] (not the unit order yet): rounded to <typeparamref name="TOut"/>, or,
    /// with <paramref name="keepFloat64"/>, as float64 (up: its unit scale multiplies them later).
    /// </summary>
    public static (double[] SumSquares, double[] Max, double[] Min) RowPass<TIn, TOut>(IntPtr src, long m, long n, int[] index, double[] scale,
        bool extremes, IntPtr rowsOut, bool keepFloat64)
        where TIn : struct, IStoredElement where TOut : struct, IStoredElement
    {
        var sq = new double[m];
        var hi = new double[m];
        var lo = new double[m];
        Rows(m, (a, b) => RowPassRange<TIn, TOut>(src, n, index, scale, extremes, rowsOut, keepFloat64, sq, hi, lo, a, b));
        return (sq, hi, lo);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RowPassRange<TIn, TOut>(IntPtr src, long n, int[] index, double[] scale, bool extremes, IntPtr rowsOut, bool keepFloat64,
        double[] sq, double[] hi, double[] lo, long a, long b)
        where TIn : struct, IStoredElement where TOut : struct, IStoredElement
    {
        const int R = 4;                                    // rows at once: four independent sums hide the add latency
        int inSize = TIn.DType.Size(), outSize = keepFloat64 ? 8 : TOut.DType.Size();
        var buffer = new double[R * n];
        bool vectors = Vectors && VectorType<TIn>();
        fixed (int* idx = index)
        fixed (double* sc = scale, buf = buffer, psq = sq, phi = hi, plo = lo)
        {
            var ys = new IntPtr[R];
            for (long i0 = a; i0 < b; i0 += R)
            {
                int r = (int)Math.Min(R, b - i0);
                for (int t = 0; t < r; t++)
                {
                    long i = i0 + t;
                    byte* row = (byte*)src + i * n * inSize;
                    byte* o = (byte*)rowsOut + i * n * outSize;
                    double* yt = keepFloat64 ? (double*)o : buf + t * n;       // float64 rows are written in place
                    ys[t] = (IntPtr)yt;
                    long k = 0;
                    // The extremes do not depend on the order of comparison (the values are finite; a signed zero
                    // only reaches the sign rule through max(·, 0)), so they run in vector lanes.
                    double mx = double.NegativeInfinity, mn = double.PositiveInfinity;
                    if (vectors)
                    {
                        var vmx = Vector256.Create(double.NegativeInfinity);
                        var vmn = Vector256.Create(double.PositiveInfinity);
                        for (; k + 8 <= n; k += 8)
                        {
                            Gather8<TIn>(row, idx + k, out var va, out var vb);
                            va = Avx.Multiply(va, Avx.LoadVector256(sc + k));
                            vb = Avx.Multiply(vb, Avx.LoadVector256(sc + k + 4));
                            Avx.Store(yt + k, va);
                            Avx.Store(yt + k + 4, vb);
                            vmx = Avx.Max(Avx.Max(va, vb), vmx);
                            vmn = Avx.Min(Avx.Min(va, vb), vmn);
                        }
                        for (int e = 0; e < 4; e++)
                        {
                            if (vmx.GetElement(e) > mx) mx = vmx.GetElement(e);
                            if (vmn.GetElement(e) < mn) mn = vmn.GetElement(e);
                        }
                    }
                    for (; k < n; k++)
                    {
                        double v = TIn.Get(row, idx[k]) * sc[k];
                        yt[k] = v;
                        if (v > mx) mx = v;
                        if (v < mn) mn = v;
                    }
                    phi[i] = extremes ? mx : double.NegativeInfinity;
                    plo[i] = extremes ? mn : double.PositiveInfinity;
                    if (!keepFloat64) StoreRow<TOut>(yt, o, n);
                }
                // Σ y² per row in k order (the order LlamaKernels.RowStats adds in).
                if (r == R)
                {
                    double* y0 = (double*)ys[0], y1 = (double*)ys[1], y2 = (double*)ys[2], y3 = (double*)ys[3];
                    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
                    for (long k = 0; k < n; k++)
                    {
                        double v0 = y0[k], v1 = y1[k], v2 = y2[k], v3 = y3[k];
                        s0 += v0 * v0; s1 += v1 * v1; s2 += v2 * v2; s3 += v3 * v3;
                    }
                    psq[i0] = s0; psq[i0 + 1] = s1; psq[i0 + 2] = s2; psq[i0 + 3] = s3;
                }
                else
                    for (int t = 0; t < r; t++)
                    {
                        double* yt = (double*)ys[t];
                        double acc = 0;
                        for (long k = 0; k < n; k++) acc += yt[k] * yt[k];
                        psq[i0 + t] = acc;
                    }
            }
        }
    }

    /// <summary>
    /// Stored elements row[idx[0..8)] widened exactly to two float64 vectors (AVX2 gathers; F32, BF16, F64). A BF16
    /// element is gathered as the 32-bit word that ends with it (2 bytes before it lie inside the mapped file: the
    /// header precedes every tensor) and its low half masked off, which leaves the float32 bits of its value.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Gather8<T>(byte* row, int* idx, out Vector256<double> a, out Vector256<double> b) where T : struct, IStoredElement
    {
        if (typeof(T) == typeof(F64Element))
        {
            a = Avx2.GatherVector256((double*)row, Sse2.LoadVector128(idx), 8);
            b = Avx2.GatherVector256((double*)row, Sse2.LoadVector128(idx + 4), 8);
            return;
        }
        var vi = Avx.LoadVector256(idx);
        Vector256<float> f;
        if (typeof(T) == typeof(F32Element)) f = Avx2.GatherVector256((float*)row, vi, 4);
        else f = Avx2.And(Avx2.GatherVector256((int*)(row - 2), vi, 2), Vector256.Create(unchecked((int)0xFFFF0000))).AsSingle();
        a = Avx.ConvertToVector256Double(f.GetLower());
        b = Avx.ConvertToVector256Double(f.GetUpper());
    }

    /// <summary>n float64 values rounded to <typeparamref name="T"/> (vectorized where the type allows).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreRow<T>(double* y, byte* o, long n) where T : struct, IStoredElement
    {
        long k = 0;
        int size = T.DType.Size();
        if (Vectors && VectorType<T>())
            for (; k + 4 <= n; k += 4) Store4<T>(Avx.LoadVector256(y + k), o + k * size);
        for (; k < n; k++) T.Put(o, k, y[k]);
    }

    /// <summary>dst row i = rows row index[i] (rows of <paramref name="rowBytes"/> bytes): the unit order applied to the gate rows.</summary>
    public static void PermuteRows(IntPtr rows, long rowBytes, long[] index, IntPtr dst) =>
        Rows(index.Length, (a, b) =>
        {
            for (long i = a; i < b; i++)
                Buffer.MemoryCopy((byte*)rows + index[i] * rowBytes, (byte*)dst + i * rowBytes, rowBytes, rowBytes);
        });

    /// <summary>dst row i = y[index[i], :]·scale[i] rounded to <typeparamref name="TOut"/>: the unit order and scale applied to the up rows (float64 y [m, n]).</summary>
    public static void ScaleRows<TOut>(IntPtr y, long n, long[] index, double[] scale, IntPtr dst) where TOut : struct, IStoredElement =>
        Rows(index.Length, (a, b) => ScaleRowsRange<TOut>(y, n, index, scale, dst, a, b));

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ScaleRowsRange<TOut>(IntPtr y, long n, long[] index, double[] scale, IntPtr dst, long a, long b) where TOut : struct, IStoredElement
    {
        int size = TOut.DType.Size();
        for (long i = a; i < b; i++)
        {
            double* row = (double*)y + index[i] * n;
            byte* o = (byte*)dst + i * n * size;
            double f = scale[i];
            long k = 0;
            if (Vectors && VectorType<TOut>())
            {
                var vf = Vector256.Create(f);
                for (; k + 4 <= n; k += 4) Store4<TOut>(Avx.Multiply(Avx.LoadVector256(row + k), vf), o + k * size);
            }
            for (; k < n; k++) TOut.Put(o, k, row[k] * f);
        }
    }

    // ------------------------------------------------------------ column statistics (down, embedding)

    /// <summary>Per column of the stored matrix [m, n]: Σ x², max x, min x, rows in order (<see cref="LlamaKernels.ColumnStats"/>; lanes are columns).</summary>
    public static (double[] SumSquares, double[] Max, double[] Min) ColumnStats<T>(IntPtr src, long m, long n)
        where T : struct, IStoredElement
    {
        var sq = new double[n];
        var hi = new double[n];
        var lo = new double[n];
        Array.Fill(hi, double.NegativeInfinity);
        Array.Fill(lo, double.PositiveInfinity);
        if (n < 64 || Environment.ProcessorCount < 2) ColumnStatsRange<T>(src, m, n, sq, hi, lo, 0, n);
        else
        {
            long mid = n / 2 / 8 * 8;
            Parallel.Invoke(() => ColumnStatsRange<T>(src, m, n, sq, hi, lo, 0, mid), () => ColumnStatsRange<T>(src, m, n, sq, hi, lo, mid, n));
        }
        return (sq, hi, lo);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ColumnStatsRange<T>(IntPtr src, long m, long n, double[] sq, double[] hi, double[] lo, long c0, long c1)
        where T : struct, IStoredElement
    {
        int size = T.DType.Size();
        const long block = 256;                               // columns whose sums stay in L1 while the rows stream by
        fixed (double* q = sq, h = hi, l = lo)
        {
            for (long b0 = c0; b0 < c1; b0 += block)
            {
                long b1 = Math.Min(c1, b0 + block);
                long vEnd = b0 + (Vectors && VectorType<T>() ? (b1 - b0) / 8 * 8 : 0);
                for (long i = 0; i < m; i++)
                {
                    byte* row = (byte*)src + i * n * size;
                    long j = b0;
                    for (; j < vEnd; j += 8)
                    {
                        Load8<T>(row + j * size, out var va, out var vb);
                        Avx.Store(q + j, Avx.Add(Avx.LoadVector256(q + j), Avx.Multiply(va, va)));
                        Avx.Store(q + j + 4, Avx.Add(Avx.LoadVector256(q + j + 4), Avx.Multiply(vb, vb)));
                        // maxpd(v, h) = v > h ? v : h and minpd(v, l) = v < l ? v : l: the scalar rule exactly.
                        Avx.Store(h + j, Avx.Max(va, Avx.LoadVector256(h + j)));
                        Avx.Store(h + j + 4, Avx.Max(vb, Avx.LoadVector256(h + j + 4)));
                        Avx.Store(l + j, Avx.Min(va, Avx.LoadVector256(l + j)));
                        Avx.Store(l + j + 4, Avx.Min(vb, Avx.LoadVector256(l + j + 4)));
                    }
                    for (; j < b1; j++)
                    {
                        double v = T.Get(row, j);
                        q[j] += v * v;
                        if (v > h[j]) h[j] = v;
                        if (v < l[j]) l[j] = v;
                    }
                }
            }
        }
    }

    // ------------------------------------------------------------ gathers (down, embedding)

    /// <summary>
    /// dst[i, j] = x[rowIndex[i], colIndex[j]]·colScale[j]·rowScale[i] from the stored matrix x (n columns) into
    /// <typeparamref name="TOut"/> at <paramref name="dst"/> [rowIndex.Length, colIndex.Length]: the products of
    /// <see cref="LlamaKernels.GatherBoth"/> with both scales (rowScale null: 1, an exact product).
    /// </summary>
    public static void GatherScale<TIn, TOut>(IntPtr src, long n, long[] rowIndex, double[]? rowScale, int[] colIndex, double[] colScale, IntPtr dst)
        where TIn : struct, IStoredElement where TOut : struct, IStoredElement =>
        Rows(rowIndex.Length, (a, b) => GatherScaleRange<TIn, TOut>(src, n, rowIndex, rowScale, colIndex, colScale, dst, a, b));

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void GatherScaleRange<TIn, TOut>(IntPtr src, long n, long[] rowIndex, double[]? rowScale, int[] colIndex, double[] colScale, IntPtr dst, long a, long b)
        where TIn : struct, IStoredElement where TOut : struct, IStoredElement
    {
        long n2 = colIndex.Length;
        int inSize = TIn.DType.Size(), outSize = TOut.DType.Size();
        var buffer = new double[n2];
        fixed (int* ci = colIndex)
        fixed (double* cs = colScale, y = buffer)
        {
            for (long i = a; i < b; i++)
            {
                byte* row = (byte*)src + rowIndex[i] * n * inSize;
                byte* o = (byte*)dst + i * n2 * outSize;
                double f = rowScale is null ? 1 : rowScale[i];
                long j = 0;
                if (Vectors && VectorType<TIn>())
                    for (; j + 8 <= n2; j += 8)
                    {
                        Gather8<TIn>(row, ci + j, out var va, out var vb);
                        Avx.Store(y + j, va);
                        Avx.Store(y + j + 4, vb);
                    }
                for (; j < n2; j++) y[j] = TIn.Get(row, ci[j]);
                long k = 0;
                if (Vectors && VectorType<TOut>())
                {
                    var vf = Vector256.Create(f);
                    for (; k + 4 <= n2; k += 4) Store4<TOut>(Avx.Multiply(Avx.Multiply(Avx.LoadVector256(y + k), Avx.LoadVector256(cs + k)), vf), o + k * outSize);
                }
                for (; k < n2; k++) TOut.Put(o, k, y[k] * cs[k] * f);
            }
        }
    }

    /// <summary>
    /// The tied embedding in the residual frame: dst[i, j] = x[i, index[j]]·sign[j] (a signed permutation of stored
    /// values, exact in every dtype, as <see cref="LlamaKernels.GatherColumns32"/> / <see cref="LlamaKernels.GatherColumns"/>
    /// compute it), converted to <typeparamref name="TOut"/>. Same dtype in and out: the stored bits with the sign bit
    /// flipped where sign[j] &lt; 0, which is that product bit for bit for every finite value and zero (the caller has
    /// checked that the embedding is finite).
    /// </summary>
    public static void SignedPermuteColumns<TIn, TOut>(IntPtr src, long m, long n, long[] index, double[] sign, IntPtr dst)
        where TIn : struct, IStoredElement where TOut : struct, IStoredElement =>
        Rows(m, (a, b) => SignedPermuteRange<TIn, TOut>(src, n, index, sign, dst, a, b));

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void SignedPermuteRange<TIn, TOut>(IntPtr src, long n, long[] index, double[] sign, IntPtr dst, long a, long b)
        where TIn : struct, IStoredElement where TOut : struct, IStoredElement
    {
        int inSize = TIn.DType.Size(), outSize = TOut.DType.Size();
        var ci = index.Select(x => (int)x).ToArray();
        fixed (int* idx = ci)
        fixed (double* sg = sign)
        {
            if (typeof(TIn) == typeof(TOut) && inSize == 4)
            {
                var mask = sign.Select(s => s < 0 ? 0x80000000u : 0u).ToArray();
                fixed (uint* mk = mask)
                    for (long i = a; i < b; i++)
                    {
                        uint* row = (uint*)((byte*)src + i * n * 4);
                        uint* o = (uint*)((byte*)dst + i * n * 4);
                        for (long j = 0; j < n; j++) o[j] = row[idx[j]] ^ mk[j];
                    }
                return;
            }
            if (typeof(TIn) == typeof(TOut) && inSize == 2)
            {
                var mask = sign.Select(s => s < 0 ? (ushort)0x8000 : (ushort)0).ToArray();
                fixed (ushort* mk = mask)
                    for (long i = a; i < b; i++)
                    {
                        ushort* row = (ushort*)((byte*)src + i * n * 2);
                        ushort* o = (ushort*)((byte*)dst + i * n * 2);
                        for (long j = 0; j < n; j++) o[j] = (ushort)(row[idx[j]] ^ mk[j]);
                    }
                return;
            }
            for (long i = a; i < b; i++)
            {
                byte* row = (byte*)src + i * n * inSize;
                byte* o = (byte*)dst + i * n * outSize;
                for (long j = 0; j < n; j++) TOut.Put(o, j, TIn.Get(row, idx[j]) * sg[j]);
            }
        }
    }
}

/// <summary>Runtime dispatch of <see cref="LlamaStreamKernels"/> on the stored and the output dtype.</summary>
internal static class LlamaStreamDispatch
{
    /// <summary>Whether the stream kernels handle stored dtype <paramref name="stored"/> written as <paramref name="output"/>.</summary>
    public static bool Supports(DType stored, DType output) => stored.IsFloat() && (output == stored || output == DType.F64);

    public static (double[] SumSquares, double[] Max, double[] Min) RowPass(DType stored, DType output, IntPtr src, long m, long n, int[] index, double[] scale,
        bool extremes, IntPtr rowsOut, bool keepFloat64)
    {
        switch (stored, output)
        {
            case (DType.F64, DType.F64): return LlamaStreamKernels.RowPass<F64Element, F64Element>(src, m, n, index, scale, extremes, rowsOut, keepFloat64);
            case (DType.F32, DType.F32): return LlamaStreamKernels.RowPass<F32Element, F32Element>(src, m, n, index, scale, extremes, rowsOut, keepFloat64);
            case (DType.F32, DType.F64): return LlamaStreamKernels.RowPass<F32Element, F64Element>(src, m, n, index, scale, extremes, rowsOut, keepFloat64);
            case (DType.F16, DType.F16): return LlamaStreamKernels.RowPass<F16Element, F16Element>(src, m, n, index, scale, extremes, rowsOut, keepFloat64);
            case (DType.F16, DType.F64): return LlamaStreamKernels.RowPass<F16Element, F64Element>(src, m, n, index, scale, extremes, rowsOut, keepFloat64);
            case (DType.BF16, DType.BF16): return LlamaStreamKernels.RowPass<BF16Element, BF16Element>(src, m, n, index, scale, extremes, rowsOut, keepFloat64);
            case (DType.BF16, DType.F64): return LlamaStreamKernels.RowPass<BF16Element, F64Element>(src, m, n, index, scale, extremes, rowsOut, keepFloat64);
            default: throw new NotSupportedException($"stored {stored} written as {output}");
        }
    }

    public static (double[] SumSquares, double[] Max, double[] Min) ColumnStats(DType t, IntPtr src, long m, long n)
    {
        switch (t)
        {
            case DType.F64: return LlamaStreamKernels.ColumnStats<F64Element>(src, m, n);
            case DType.F32: return LlamaStreamKernels.ColumnStats<F32Element>(src, m, n);
            case DType.F16: return LlamaStreamKernels.ColumnStats<F16Element>(src, m, n);
            case DType.BF16: return LlamaStreamKernels.ColumnStats<BF16Element>(src, m, n);
            default: throw new NotSupportedException($"dtype {t}");
        }
    }

    public static void ScaleRows(DType output, IntPtr y, long n, long[] index, double[] scale, IntPtr dst)
    {
        switch (output)
        {
            case DType.F64: LlamaStreamKernels.ScaleRows<F64Element>(y, n, index, scale, dst); break;
            case DType.F32: LlamaStreamKernels.ScaleRows<F32Element>(y, n, index, scale, dst); break;
            case DType.F16: LlamaStreamKernels.ScaleRows<F16Element>(y, n, index, scale, dst); break;
            case DType.BF16: LlamaStreamKernels.ScaleRows<BF16Element>(y, n, index, scale, dst); break;
            default: throw new NotSupportedException($"dtype {output}");
        }
    }

    public static void GatherScale(DType stored, DType output, IntPtr src, long n, long[] rowIndex, double[]? rowScale, int[] colIndex, double[] colScale, IntPtr dst)
    {
        switch (stored, output)
        {
            case (DType.F64, DType.F64): LlamaStreamKernels.GatherScale<F64Element, F64Element>(src, n, rowIndex, rowScale, colIndex, colScale, dst); break;
            case (DType.F32, DType.F32): LlamaStreamKernels.GatherScale<F32Element, F32Element>(src, n, rowIndex, rowScale, colIndex, colScale, dst); break;
            case (DType.F32, DType.F64): LlamaStreamKernels.GatherScale<F32Element, F64Element>(src, n, rowIndex, rowScale, colIndex, colScale, dst); break;
            case (DType.F16, DType.F16): LlamaStreamKernels.GatherScale<F16Element, F16Element>(src, n, rowIndex, rowScale, colIndex, colScale, dst); break;
            case (DType.F16, DType.F64): LlamaStreamKernels.GatherScale<F16Element, F64Element>(src, n, rowIndex, rowScale, colIndex, colScale, dst); break;
            case (DType.BF16, DType.BF16): LlamaStreamKernels.GatherScale<BF16Element, BF16Element>(src, n, rowIndex, rowScale, colIndex, colScale, dst); break;
            case (DType.BF16, DType.F64): LlamaStreamKernels.GatherScale<BF16Element, F64Element>(src, n, rowIndex, rowScale, colIndex, colScale, dst); break;
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
