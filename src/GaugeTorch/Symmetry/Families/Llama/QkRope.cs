using GaugeTorch.Model;
using static TorchSharp.torch;

namespace GaugeTorch.Symmetry;

/// <summary>
/// LLaMA family, GAUGE.md §6.2 family 1 (the papers' G_RoPE), query–key commutant of the rotary rotations: per KV
/// group r and rotary plane j (head dimensions j and j + hd/2, HF's rotate_half pairing) one complex z ≠ 0. Every
/// query head of the group has its plane multiplied by z, the group's key plane by 1/conj(z), on the weight columns and
/// the bias entries alike. Why it is a symmetry: writing a plane as the complex number q_j + i·q_{j+hd/2}, RoPE
/// multiplies it by e^{iω_j p}, and the score is Σ_j Re(q_j·conj(k_j)·e^{iω_j(p−s)}); z·conj(1/conj(z)) = 1, and complex
/// scalars commute with the rotations, so every score at every pair of positions is unchanged. A general GL(hd) (the
/// GPT-2 family qk) does not commute with the rotations; when two planes share a frequency the commutant is larger,
/// but the rotary frequencies ω_j = θ^(−2j/hd) (also after linear or llama3 scaling) are distinct, so this is the whole
/// commutant. Dimension L·G·hd (hd/2 complex numbers per group). Sampled with |z| log-uniform in [0.5, 2] (as §4's Λ)
/// and a uniform phase.
/// </summary>
public sealed class QkRope : SymmetryFamily
{
    public static readonly QkRope Instance = new();

    public override string Name => "qk-rope";
    public override string Reference => "GAUGE.md §6.2 family 1";
    public override bool IsPaper => true;
    public override bool Discrete => false;
    public override string Requirement => "rotary positions";
    public override bool HoldsFor(ModelTraits t) => t.Positions == PositionKind.Rotary;
    public override string DimensionFormula(ModelTraits t) => "L·G·hd";
    public override long Dimension(ModelTraits t) => (long)t.Layers * t.KvHeads * t.HeadDim;

    public override FamilyElement Sample(SampleKey key, ModelTraits t) => new DrawnElement(layer: (l, _) =>
    {
        using var scope = NewDisposeScope();
        var (re, im) = RopePlanes.RandomScalars(t.KvHeads, t.HeadDim / 2, key.For(l, Name));
        var r2 = re.square() + im.square();
        return new RopePlaneAction(Name, RopePlaneAction.Complex(re, im).MoveToOuterDisposeScope(), RopePlaneAction.Complex(re / r2, im / r2).MoveToOuterDisposeScope());
    });

    public override FamilyGenerator RandomGenerator(SampleKey key, ModelTraits t)
    {
        (Tensor A, Tensor B) X(int l)
        {
            var g = key.For(l, Name + "/generator");
            long half = t.HeadDim / 2;
            return (randn([t.KvHeads, half], ScalarType.Float64, generator: g), randn([t.KvHeads, half], ScalarType.Float64, generator: g));
        }
        return new DrawnGenerator(
            layer: (l, at) =>
            {
                // d/dτ at τ = 0 of z = e^{τ(a+ib)} on the queries and of 1/conj(z) = e^{τ(−a+ib)} on the keys.
                var (a, b) = X(l);
                var xq = ViewOps.PerQueryHead(RopePlanes.Matrix(a, b), t);
                var xk = RopePlanes.Matrix(-a, b);
                var v = ViewOps.Zeros(at);
                v.Q = matmul(at.Q, xq);
                v.K = matmul(at.K, xk);
                if (at.QBias is not null) v.QBias = matmul(at.QBias.unsqueeze(1), xq).squeeze(1);
                if (at.KBias is not null) v.KBias = matmul(at.KBias.unsqueeze(1), xk).squeeze(1);
                return v;
            },
            globals: null,
            exp: tau => new DrawnElement(layer: (l, _) =>
            {
                var (a, b) = X(l);
                a = a * tau; b = b * tau;
                return new QkAction(Name, RopePlanes.Matrix(a.exp() * b.cos(), a.exp() * b.sin()), RopePlanes.Matrix((-a).exp() * b.cos(), (-a).exp() * b.sin()));
            }));
    }
}

/// <summary>The rotary planes of a head (dimension j with j + hd/2) as real matrices acting on the right of a [.., hd] row.</summary>
internal static class RopePlanes
{
    /// <summary>
    /// For complex scalars z = re + i·im per plane ([n, hd/2] each), the [n, hd, hd] matrix A with (x·A) the row
    /// whose plane j is z·(x_j + i·x_{j+hd/2}): A[j, j] = A[j+h, j+h] = re, A[j, j+h] = im, A[j+h, j] = −im.
    /// </summary>
    public static Tensor Matrix(Tensor re, Tensor im)
    {
        using var scope = NewDisposeScope();
        var r = diag_embed(re);
        var i = diag_embed(im);
        return cat([cat([r, i], -1), cat([-i, r], -1)], -2).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The [n, hd, hd] matrix of a general real 2×2 map per plane (<paramref name="m"/> [n, hd/2, 2, 2], acting on the
    /// row (x_j, x_{j+hd/2}) as (x_j, x_{j+h})·m).
    /// </summary>
    public static Tensor General(Tensor m)
    {
        using var scope = NewDisposeScope();
        var a = diag_embed(m[.., .., 0, 0]);
        var b = diag_embed(m[.., .., 0, 1]);
        var c = diag_embed(m[.., .., 1, 0]);
        var d = diag_embed(m[.., .., 1, 1]);
        return cat([cat([a, b], -1), cat([c, d], -1)], -2).MoveToOuterDisposeScope();
    }

    /// <summary>Random z per (group, plane): |z| log-uniform in [0.5, 2], phase uniform in [0, 2π). Returns (re, im).</summary>
    public static (Tensor Re, Tensor Im) RandomScalars(long groups, long planes, Generator g)
    {
        using var scope = NewDisposeScope();
        var mag = ((rand([groups, planes], ScalarType.Float64, generator: g) * 2 - 1) * Math.Log(2.0)).exp();
        var phase = rand([groups, planes], ScalarType.Float64, generator: g) * (2 * Math.PI);
        return ((mag * phase.cos()).MoveToOuterDisposeScope(), (mag * phase.sin()).MoveToOuterDisposeScope());
    }
}

/// <summary>
/// The rotary-plane maps of the LLaMA family's query–key families and controls: per KV group r and plane j a real
/// 2×2 map m acting on a query or key row's plane (x_j, x_{j+hd/2}) as (x_j, x_{j+hd/2})·m; the group's query heads
/// get <see cref="QueryPlanes"/>, its key head <see cref="KeyPlanes"/>. The same transformation as
/// <see cref="QkAction"/> with the block matrices <see cref="A"/> and <see cref="B"/> (<see cref="RopePlanes.General"/>),
/// applied plane by plane: four multiplications per weight in one pass over the q_proj / k_proj storage, instead of a
/// batched [d, hd]·[hd, hd] product per head that is mostly zeros (issue 12 item 5; docs/benchmarks.md).
/// </summary>
public sealed class RopePlaneAction(string name, Tensor queryPlanes, Tensor keyPlanes) : ILayerAction
{
    /// <summary>[G, hd/2, 2, 2] on the query side.</summary>
    public Tensor QueryPlanes { get; } = queryPlanes;
    /// <summary>[G, hd/2, 2, 2] on the key side.</summary>
    public Tensor KeyPlanes { get; } = keyPlanes;
    public string Name { get; } = name;

    /// <summary>The query side as [G, hd, hd] block matrices (x·A), as <see cref="QkAction.A"/> holds them.</summary>
    public Tensor A => RopePlanes.General(QueryPlanes);
    /// <summary>The key side as [G, hd, hd] block matrices.</summary>
    public Tensor B => RopePlanes.General(KeyPlanes);

    /// <summary>The maps of complex scalars z = re + i·im per (group, plane): m = [[re, im], [−im, re]].</summary>
    public static Tensor Complex(Tensor re, Tensor im) => stack([stack([re, im], -1), stack([-im, re], -1)], -2);

    public void Apply(LayerView w, ModelTraits t)
    {
        w.Q = Planes(w.Q, QueryPlanes, t.GroupSize);
        if (w.QBias is not null) w.QBias = matmul(w.QBias.unsqueeze(1), ViewOps.PerQueryHead(A, t)).squeeze(1);
        w.K = Planes(w.K, KeyPlanes, 1);
        if (w.KBias is not null) w.KBias = matmul(w.KBias.unsqueeze(1), B).squeeze(1);
    }

    public ILayerAction Inverse() => new RopePlaneAction(Name, linalg.inv(QueryPlanes), linalg.inv(KeyPlanes));

    /// <summary>x [n, d, hd] with head i's planes mapped by m[i / per]; in x's layout when it is [out, in] or contiguous.</summary>
    private static unsafe Tensor Planes(Tensor x, Tensor m, int per)
    {
        long n = x.shape[0], d = x.shape[1], hd = x.shape[2], h = hd / 2;
        bool stored = x.dtype == ScalarType.Float64 && OutInLayout.IsStored("q", x);
        if (!stored && !(x.dtype == ScalarType.Float64 && x.is_contiguous()))
        {
            using var scope = NewDisposeScope();
            var blocks = RopePlanes.General(m).to_type(x.dtype);
            if (per > 1) blocks = blocks.repeat_interleave(per, 0);
            return matmul(x, blocks).MoveToOuterDisposeScope();
        }
        double[] c;
        using (var mc = m.to_type(ScalarType.Float64).contiguous())
        using (var acc = mc.data<double>()) c = acc.ToArray();       // [G, h, 2, 2]
        using var src = stored ? x.permute(0, 2, 1) : x.alias();     // stored: [n, hd, d] rows; else [n, d, hd]
        var dst = empty(src.shape, ScalarType.Float64);
        double* s = (double*)SafeTensors.NativeTensorAccess.DataPointer(src);
        double* o = (double*)SafeTensors.NativeTensorAccess.DataPointer(dst);
        void Heads(long a, long b)
        {
            for (long i = a; i < b; i++)
            {
                long g = i / per;
                for (long j = 0; j < h; j++)
                {
                    long k = (g * h + j) * 4;
                    double m00 = c[k], m01 = c[k + 1], m10 = c[k + 2], m11 = c[k + 3];
                    if (stored) PlaneRows(s + (i * hd + j) * d, s + (i * hd + j + h) * d, o + (i * hd + j) * d, o + (i * hd + j + h) * d, d, m00, m01, m10, m11);
                    else for (long r = 0; r < d; r++)
                    {
                        double* row = s + (i * d + r) * hd;
                        double* orow = o + (i * d + r) * hd;
                        double xa = row[j], xb = row[j + h];
                        orow[j] = xa * m00 + xb * m10;
                        orow[j + h] = xa * m01 + xb * m11;
                    }
                }
            }
        }
        if (n >= 2 && Environment.ProcessorCount >= 2) Parallel.Invoke(() => Heads(0, n / 2), () => Heads(n / 2, n));
        else Heads(0, n);
        GC.KeepAlive(src);
        if (!stored) return dst;
        using (dst) return dst.permute(0, 2, 1);
    }

    private static unsafe void PlaneRows(double* a, double* b, double* oa, double* ob, long d, double m00, double m01, double m10, double m11)
    {
        for (long r = 0; r < d; r++)
        {
            double xa = a[r], xb = b[r];
            oa[r] = xa * m00 + xb * m10;
            ob[r] = xa * m01 + xb * m11;
        }
    }
}
