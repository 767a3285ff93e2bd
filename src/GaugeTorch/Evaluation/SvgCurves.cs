using System.Globalization;
using System.Text;

namespace GaugeTorch.Evaluation;

/// <summary>A dependency-free SVG line plot of a few curves over one x axis (the project's SVG style, as <see cref="SvgHistogram"/>).</summary>
public static class SvgCurves
{
    public sealed record Series(string Label, IReadOnlyList<double> X, IReadOnlyList<double> Y, string Color);

    public static string Render(string title, string xLabel, string yLabel, IReadOnlyList<Series> series)
    {
        var ys = series.SelectMany(s => s.Y).Where(double.IsFinite).DefaultIfEmpty(0).ToList();
        var xs = series.SelectMany(s => s.X).Where(double.IsFinite).DefaultIfEmpty(0).ToList();
        double ylo = ys.Min(), yhi = ys.Max();
        double pad = Math.Max(1e-9, (yhi - ylo) * 0.08);
        ylo -= pad; yhi += pad;
        double xlo = xs.Min(), xhi = Math.Max(xs.Max(), xlo + 1e-9);
        const int W = 900, H = 420, ml = 70, mr = 20, mt = 50, mb = 60;
        double pw = W - ml - mr, ph = H - mt - mb;
        string F(double v) => v.ToString("0.##", CultureInfo.InvariantCulture);
        double Px(double x) => ml + (x - xlo) / (xhi - xlo) * pw;
        double Py(double y) => mt + ph - (y - ylo) / (yhi - ylo) * ph;
        var sb = new StringBuilder();
        sb.AppendLine($"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" font-family=\"sans-serif\" font-size=\"12\">");
        sb.AppendLine($"<rect width=\"{W}\" height=\"{H}\" fill=\"white\"/>");
        sb.AppendLine($"<text x=\"{W / 2}\" y=\"25\" text-anchor=\"middle\" font-size=\"15\">{Escape(title)}</text>");
        sb.AppendLine($"<line x1=\"{ml}\" y1=\"{mt + ph}\" x2=\"{ml + pw}\" y2=\"{mt + ph}\" stroke=\"black\"/>");
        sb.AppendLine($"<line x1=\"{ml}\" y1=\"{mt}\" x2=\"{ml}\" y2=\"{mt + ph}\" stroke=\"black\"/>");
        for (int i = 0; i <= 5; i++)
        {
            double x = xlo + (xhi - xlo) * i / 5, y = ylo + (yhi - ylo) * i / 5;
            sb.AppendLine($"<line x1=\"{F(Px(x))}\" y1=\"{mt + ph}\" x2=\"{F(Px(x))}\" y2=\"{mt + ph + 5}\" stroke=\"black\"/>");
            sb.AppendLine($"<text x=\"{F(Px(x))}\" y=\"{mt + ph + 18}\" text-anchor=\"middle\">{x.ToString("0.##", CultureInfo.InvariantCulture)}</text>");
            sb.AppendLine($"<line x1=\"{ml - 5}\" y1=\"{F(Py(y))}\" x2=\"{ml}\" y2=\"{F(Py(y))}\" stroke=\"black\"/>");
            sb.AppendLine($"<text x=\"{ml - 8}\" y=\"{F(Py(y) + 4)}\" text-anchor=\"end\">{y.ToString("0.###", CultureInfo.InvariantCulture)}</text>");
        }
        int k = 0;
        foreach (var s in series)
        {
            var pts = string.Join(" ", s.X.Zip(s.Y).Where(p => double.IsFinite(p.Second)).Select(p => $"{F(Px(p.First))},{F(Py(p.Second))}"));
            sb.AppendLine($"<polyline points=\"{pts}\" fill=\"none\" stroke=\"{s.Color}\" stroke-width=\"2\"/>");
            foreach (var (x, y) in s.X.Zip(s.Y).Where(p => double.IsFinite(p.Second)))
                sb.AppendLine($"<circle cx=\"{F(Px(x))}\" cy=\"{F(Py(y))}\" r=\"3\" fill=\"{s.Color}\"/>");
            sb.AppendLine($"<rect x=\"{W - 330}\" y=\"{40 + 20 * k}\" width=\"12\" height=\"12\" fill=\"{s.Color}\"/><text x=\"{W - 312}\" y=\"{51 + 20 * k}\">{Escape(s.Label)}</text>");
            k++;
        }
        sb.AppendLine($"<text x=\"{ml + pw / 2}\" y=\"{H - 15}\" text-anchor=\"middle\">{Escape(xLabel)}</text>");
        sb.AppendLine($"<text x=\"15\" y=\"{mt + ph / 2}\" text-anchor=\"middle\" transform=\"rotate(-90 15 {mt + ph / 2})\">{Escape(yLabel)}</text>");
        sb.AppendLine("</svg>");
        return sb.ToString();
    }

    private static string Escape(string s) => s.Replace("&", "&amp;").Replace("<", "&lt;").Replace(">", "&gt;");
}
