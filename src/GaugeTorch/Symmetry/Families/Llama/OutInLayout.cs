using GaugeTorch.SafeTensors;
using static TorchSharp.torch;

namespace GaugeTorch.Symmetry;

/// <summary>
/// The LLaMA family's [out, in] storage seen through the neutral view (issue 12 item 5). A LLaMA-family layer view
/// holds transposed strided views of contiguous nn.Linear weights (<c>LlamaAdapter.ToView</c>): Up = up_proj.t(),
/// Q = q_proj.view(H, hd, d).transpose(1, 2), O = o_proj.t().view(H, hd, d). On such views libtorch's index_select
/// gathers across the storage's rows: a [2048, 8192] float64 gather took 250 ms single-threaded here against 12 ms for
/// a clone of the same tensor, and its contiguous [in, out] result then cost the evaluator a second, transposing copy
/// into its compute layout (measured with <c>gaugetorch-bench micro</c>-style timings, docs/benchmarks.md). The
/// monomial maps here (permutations and diagonal scales of rows and columns, the whole of head-perm, group-perm,
/// mlp-perm and residual-signed-perm) work on the storage instead: one pass over contiguous rows on two threads, and
/// the result is returned in the input's own layout, so a family's output is again an [out, in] view that the forward
/// reads in place (<see cref="IsStored"/>). A tensor in any other layout (e.g. after vo's matmul, or GPT-2's) is
/// handled as a contiguous [rows, cols] matrix or by libtorch's ops; the values are the same either way.
/// </summary>
public static unsafe class OutInLayout
{
    /// <summary>
    /// True when <paramref name="x"/> (a layer view's tensor for <paramref name="role"/>) is the transpose of a
    /// contiguous matrix in the form the forward reads it: a 2-D [in, out] = Wᵀ, q/k/v [n, d, hd] whose
    /// [d, n·hd] flattening is Wᵀ, or o [H, hd, d] whose [H·hd, d] flattening is Wᵀ. The forward reads every such
    /// tensor as a strided matmul operand without a copy (BLAS takes the transpose flag).
    /// </summary>
    public static bool IsStored(string role, Tensor x)
    {
        if (x.is_contiguous()) return false;
        return x.dim() switch
        {
            2 => x.t().is_contiguous(),
            3 when role is "q" or "k" or "v" => x.permute(0, 2, 1).is_contiguous(),
            3 when role is "o" => x.permute(2, 0, 1).is_contiguous(),
            _ => false,
        };
    }

    private static void Split(long n, Action<long, long> body)
    {
        if (n < 64 || Environment.ProcessorCount < 2) { body(0, n); return; }
        long mid = n / 2;
        Parallel.Invoke(() => body(0, mid), () => body(mid, n));
    }

    /// <summary>
    /// out[i, j] = s[ri[i], ci[j]]·rs[i]·cs[j] for a contiguous float64 matrix s [m, n] (a null index is the
    /// identity, a null scale ones); a new contiguous [ri.Length or m, ci.Length or n] tensor.
    /// </summary>
    public static Tensor Gather(Tensor s, long[]? ri, double[]? rs, long[]? ci, double[]? cs)
    {
        if (s.dtype != ScalarType.Float64 || !s.is_contiguous() || s.dim() != 2) throw new ArgumentException("Gather needs a contiguous float64 matrix");
        long n = s.shape[1];
        long m2 = ri?.Length ?? s.shape[0], n2 = ci?.Length ?? n;
        var dst = empty(m2, n2, ScalarType.Float64);
        double* src = (double*)NativeTensorAccess.DataPointer(s);
        double* d = (double*)NativeTensorAccess.DataPointer(dst);
        // Pinned for the loops: indexing the managed arrays bounds-checked every element.
        var hr = ri is null ? default : System.Runtime.InteropServices.GCHandle.Alloc(ri, System.Runtime.InteropServices.GCHandleType.Pinned);
        var hc = ci is null ? default : System.Runtime.InteropServices.GCHandle.Alloc(ci, System.Runtime.InteropServices.GCHandleType.Pinned);
        var hs = cs is null ? default : System.Runtime.InteropServices.GCHandle.Alloc(cs, System.Runtime.InteropServices.GCHandleType.Pinned);
        try
        {
            long* rip = ri is null ? null : (long*)hr.AddrOfPinnedObject();
            long* cip = ci is null ? null : (long*)hc.AddrOfPinnedObject();
            double* csp = cs is null ? null : (double*)hs.AddrOfPinnedObject();
            // The loop's pointers as arguments of a static function: captured in a closure they were re-read from
            // the heap on every element (the stores through o may alias them as far as the JIT knows): 5 ns per
            // gathered element instead of about 1.
            Split(m2, (a, b) => Rows(src, d, n, n2, rip, rs, cip, csp, a, b));
        }
        finally
        {
            if (hr.IsAllocated) hr.Free();
            if (hc.IsAllocated) hc.Free();
            if (hs.IsAllocated) hs.Free();
        }
        GC.KeepAlive(s);
        return dst;
    }

    private static void Rows(double* src, double* d, long n, long n2, long* rip, double[]? rs, long* cip, double* csp, long a, long b)
    {
        for (long i = a; i < b; i++)
        {
            double* row = src + (rip is null ? i : rip[i]) * n;
            double* o = d + i * n2;
            double f = rs is null ? 1.0 : rs[i];
            if (cip is null)
            {
                if (csp is null)
                {
                    if (f == 1.0) Buffer.MemoryCopy(row, o, n2 * sizeof(double), n2 * sizeof(double));
                    else for (long j = 0; j < n2; j++) o[j] = row[j] * f;
                }
                else for (long j = 0; j < n2; j++) o[j] = row[j] * csp[j] * f;
            }
            else if (csp is null)
            {
                if (f == 1.0) for (long j = 0; j < n2; j++) o[j] = row[cip[j]];
                else for (long j = 0; j < n2; j++) o[j] = row[cip[j]] * f;
            }
            else for (long j = 0; j < n2; j++) o[j] = row[cip[j]] * csp[j] * f;
        }
    }

    /// <summary>
    /// m′[i, j] = m[ri[i], ci[j]]·rs[i]·cs[j] for a 2-D float64 view (Up, Gate, Down), in m's layout: on an
    /// [out, in] view the storage's columns and rows are gathered and the result is again its transpose.
    /// </summary>
    public static Tensor Monomial(Tensor m, long[]? ri, double[]? rs, long[]? ci, double[]? cs)
    {
        if (m.dtype == ScalarType.Float64 && m.dim() == 2 && !m.is_contiguous() && m.t().is_contiguous())
        {
            using var st = m.t();
            using var g = Gather(st, ci, cs, ri, rs);
            return g.t();
        }
        if (m.dtype == ScalarType.Float64 && m.is_contiguous()) return Gather(m, ri, rs, ci, cs);
        using var scope = NewDisposeScope();
        var r = m;
        if (ri is not null) r = r.index_select(0, tensor(ri));
        if (ci is not null) r = r.index_select(1, tensor(ci));
        if (rs is not null) r = r * tensor(rs).unsqueeze(1);
        if (cs is not null) r = r * tensor(cs);
        return r.MoveToOuterDisposeScope();
    }

    /// <summary>Every entry of a head index repeated for the head's <paramref name="size"/> rows: (σ(j)·size + c) for j, c.</summary>
    private static long[] Blocks(long[] heads, long size)
    {
        var r = new long[heads.Length * size];
        for (long j = 0; j < heads.Length; j++)
            for (long c = 0; c < size; c++) r[j * size + c] = heads[j] * size + c;
        return r;
    }

    /// <summary>
    /// A reader's per-head blocks x [n, d, hd] (q, k, v): x′[j, r, c] = x[σ(j), π(r), c]·s[r] (σ, π, s each optional),
    /// in x's layout (an [out, in] view stays one).
    /// </summary>
    public static Tensor ReaderHeads(Tensor x, long[]? sigma, long[]? pi, double[]? s)
    {
        long n = x.shape[0], d = x.shape[1], hd = x.shape[2];
        if (x.dtype == ScalarType.Float64 && IsStored("q", x))
        {
            // Storage [n·hd, d]: rows (σ(j), c), columns π(r) scaled by s[r].
            using var st = x.permute(0, 2, 1).reshape(n * hd, d);
            using var g = Gather(st, sigma is null ? null : Blocks(sigma, hd), null, pi, s);
            using var v = g.view(sigma?.Length ?? n, hd, d);
            return v.transpose(1, 2);
        }
        if (x.dtype == ScalarType.Float64 && x.is_contiguous())
        {
            // [n·d, hd]: row (σ(j), π(r)) scaled by s[r].
            long n2 = sigma?.Length ?? n;
            var rows = new long[n2 * d];
            var scale = s is null ? null : new double[n2 * d];
            for (long j = 0; j < n2; j++)
                for (long r = 0; r < d; r++)
                {
                    rows[j * d + r] = (sigma is null ? j : sigma[j]) * d + (pi is null ? r : pi[r]);
                    if (scale is not null) scale[j * d + r] = s![r];
                }
            using var flat = x.view(n * d, hd);
            using var g = Gather(flat, rows, scale, null, null);
            return g.view(n2, d, hd);
        }
        using var scope = NewDisposeScope();
        var y = x;
        if (sigma is not null) y = y.index_select(0, tensor(sigma));
        if (pi is not null) y = y.index_select(1, tensor(pi));
        if (s is not null) y = y * tensor(s).view(1, -1, 1);
        return y.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The writer's per-head blocks o [H, hd, d]: o′[j, c, r] = o[σ(j), c, π(r)]·s[r] (each optional), in o's layout.
    /// </summary>
    public static Tensor WriterHeads(Tensor o, long[]? sigma, long[]? pi, double[]? s)
    {
        long h = o.shape[0], hd = o.shape[1], d = o.shape[2];
        if (o.dtype == ScalarType.Float64 && IsStored("o", o))
        {
            // Storage [d, H·hd]: row π(r) scaled by s[r], columns (σ(j), c).
            using var st = o.permute(2, 0, 1).reshape(d, h * hd);
            using var g = Gather(st, pi, s, sigma is null ? null : Blocks(sigma, hd), null);
            using var tt = g.t();
            return tt.view(sigma?.Length ?? h, hd, d);
        }
        if (o.dtype == ScalarType.Float64 && o.is_contiguous())
        {
            using var flat = o.view(h * hd, d);
            using var g = Gather(flat, sigma is null ? null : Blocks(sigma, hd), null, pi, s);
            return g.view(sigma?.Length ?? h, hd, d);
        }
        using var scope = NewDisposeScope();
        var y = o;
        if (sigma is not null) y = y.index_select(0, tensor(sigma));
        if (pi is not null) y = y.index_select(2, tensor(pi));
        if (s is not null) y = y * tensor(s);
        return y.MoveToOuterDisposeScope();
    }
}
