using GaugeTorch.Alignment;

namespace GaugeTorch.Tests.Alignment;

public class LinearAssignmentTests
{
    private static IEnumerable<int[]> Permutations(int n)
    {
        var a = Enumerable.Range(0, n).ToArray();
        yield return (int[])a.Clone();
        // Heap's algorithm.
        var c = new int[n];
        int i = 0;
        while (i < n)
        {
            if (c[i] < i)
            {
                if (i % 2 == 0) (a[0], a[i]) = (a[i], a[0]);
                else (a[c[i]], a[i]) = (a[i], a[c[i]]);
                yield return (int[])a.Clone();
                c[i]++;
                i = 0;
            }
            else
            {
                c[i] = 0;
                i++;
            }
        }
    }

    [Fact]
    public void MatchesBruteForceOnEverySizeUpToEight()
    {
        var rng = new Random(5);
        for (int n = 1; n <= 8; n++)
            for (int trial = 0; trial < (n <= 6 ? 30 : 5); trial++)
            {
                // Integer costs (ties are frequent) and continuous ones.
                var cost = Enumerable.Range(0, n * n).Select(_ => trial % 2 == 0 ? rng.Next(5) : rng.NextDouble() * 10 - 5).ToArray();
                var best = Permutations(n).Min(p => LinearAssignment.Total(cost, n, p));
                var got = LinearAssignment.Minimize(cost, n);
                Assert.Equal(Enumerable.Range(0, n), got.OrderBy(x => x));   // a permutation
                Assert.True(Math.Abs(LinearAssignment.Total(cost, n, got) - best) <= 1e-9, $"n={n} trial={trial}: {LinearAssignment.Total(cost, n, got)} vs optimum {best}");
            }
    }

    [Fact]
    public void RecoversAHiddenPermutationAtScale()
    {
        // S = similarity of a random set of vectors with a permuted, slightly noisy copy of itself: the optimum is
        // the hidden permutation (n = 400 also exercises the O(n³) path at a realistic size).
        int n = 400, d = 32;
        var rng = new Random(11);
        var x = new double[n, d];
        for (int i = 0; i < n; i++) for (int k = 0; k < d; k++) x[i, k] = rng.NextDouble() * 2 - 1;
        var hidden = Enumerable.Range(0, n).OrderBy(_ => rng.Next()).ToArray();
        var s = new double[n * n];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++)
            {
                double dot = 0;
                for (int k = 0; k < d; k++) dot += x[i, k] * (x[hidden[j], k] + 1e-3 * Math.Sin(j + k));
                s[i * n + j] = dot;
            }
        var got = LinearAssignment.Maximize(s, n);
        for (int i = 0; i < n; i++) Assert.Equal(i, hidden[got[i]]);
    }

    [Fact]
    public void RejectsBadInput()
    {
        Assert.Throws<ArgumentException>(() => LinearAssignment.Minimize(new double[3], 2));
        Assert.Throws<ArgumentException>(() => LinearAssignment.Minimize(new[] { 0, double.NaN, 0, 0 }, 2));
        Assert.Empty(LinearAssignment.Minimize([], 0));
    }
}
