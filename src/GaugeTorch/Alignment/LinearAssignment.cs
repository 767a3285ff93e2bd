namespace GaugeTorch.Alignment;

/// <summary>
/// The linear assignment problem: for an n×n cost matrix C, the permutation π minimizing Σ_i C[i, π(i)].
/// NuGet has no maintained solver for .NET, so this is the shortest-augmenting-path Hungarian algorithm with dual
/// potentials (Kuhn–Munkres as refined by Jonker and Volgenant): one Dijkstra-like augmentation per row over reduced
/// costs, O(n³) worst case, exact in floating point up to ties. Tested against brute force on every size up to 8.
/// </summary>
public static class LinearAssignment
{
    /// <summary>
    /// Rows to columns: <c>result[i]</c> is the column assigned to row i, minimizing the total cost.
    /// <paramref name="cost"/> is row-major n×n; every entry must be finite.
    /// </summary>
    public static int[] Minimize(ReadOnlySpan<double> cost, int n)
    {
        if (n < 0 || cost.Length != (long)n * n) throw new ArgumentException($"cost has {cost.Length} entries, expected {n}×{n}");
        foreach (var c in cost)
            if (!double.IsFinite(c)) throw new ArgumentException("assignment costs must be finite");
        if (n == 0) return [];
        // 1-based arrays in the classic formulation: u, v potentials; p[j] = row matched to column j (0 = none).
        var u = new double[n + 1];
        var v = new double[n + 1];
        var p = new int[n + 1];
        var way = new int[n + 1];
        var minv = new double[n + 1];
        var used = new bool[n + 1];
        for (int i = 1; i <= n; i++)
        {
            p[0] = i;
            int j0 = 0;
            Array.Fill(minv, double.PositiveInfinity);
            Array.Clear(used);
            do
            {
                used[j0] = true;
                int i0 = p[j0], j1 = 0;
                double delta = double.PositiveInfinity;
                int row = (i0 - 1) * n;
                for (int j = 1; j <= n; j++)
                {
                    if (used[j]) continue;
                    double cur = cost[row + j - 1] - u[i0] - v[j];
                    if (cur < minv[j])
                    {
                        minv[j] = cur;
                        way[j] = j0;
                    }
                    if (minv[j] < delta)
                    {
                        delta = minv[j];
                        j1 = j;
                    }
                }
                for (int j = 0; j <= n; j++)
                {
                    if (used[j])
                    {
                        u[p[j]] += delta;
                        v[j] -= delta;
                    }
                    else minv[j] -= delta;
                }
                j0 = j1;
            } while (p[j0] != 0);
            do
            {
                int j1 = way[j0];
                p[j0] = p[j1];
                j0 = j1;
            } while (j0 != 0);
        }
        var result = new int[n];
        for (int j = 1; j <= n; j++) result[p[j] - 1] = j - 1;
        return result;
    }

    /// <summary>Rows to columns maximizing Σ_i S[i, π(i)] (a similarity matrix, row-major n×n).</summary>
    public static int[] Maximize(ReadOnlySpan<double> similarity, int n)
    {
        var neg = new double[similarity.Length];
        for (int i = 0; i < neg.Length; i++) neg[i] = -similarity[i];
        return Minimize(neg, n);
    }

    /// <summary>Σ_i C[i, π(i)].</summary>
    public static double Total(ReadOnlySpan<double> cost, int n, IReadOnlyList<int> assignment)
    {
        double s = 0;
        for (int i = 0; i < n; i++) s += cost[i * n + assignment[i]];
        return s;
    }
}
