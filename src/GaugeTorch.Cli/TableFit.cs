using Spectre.Console;

namespace GaugeTorch.Cli;

/// <summary>A table column: its header, an abbreviation for narrow terminals, and how much it matters (0 = always shown).</summary>
public sealed record FitColumn(string Header, string? Short = null, int Priority = 0, bool Right = false);

/// <summary>
/// Tables that fit the terminal without breaking cells: Spectre shrinks columns that do not fit by wrapping their
/// text, which split numbers such as 1.23e-16 over two lines in an 80-column terminal. Here no cell ever wraps: the
/// headers are abbreviated first, then the least important columns are dropped (highest priority number first)
/// until the rendered table fits, and what was left out is said under it.
/// </summary>
public static class TableFit
{
    /// <summary>The table with the columns that fit <paramref name="width"/>, and the headers of those dropped.</summary>
    public static (Table Table, IReadOnlyList<string> Dropped) Build(IReadOnlyList<FitColumn> columns, IReadOnlyList<string[]> rows, int width, string? title = null)
    {
        var shown = Enumerable.Range(0, columns.Count).ToList();
        bool abbreviate = false;
        while (true)
        {
            var t = Make(columns, rows, shown, abbreviate, title);
            if (Width(t) <= width) return (t, columns.Where((_, i) => !shown.Contains(i)).Select(c => c.Header).ToList());
            if (!abbreviate && columns.Any(c => c.Short is not null))
            {
                abbreviate = true;
                continue;
            }
            int drop = shown.Where(i => columns[i].Priority > 0).OrderByDescending(i => columns[i].Priority).ThenByDescending(i => i).DefaultIfEmpty(-1).First();
            if (drop < 0) return (t, columns.Where((_, i) => !shown.Contains(i)).Select(c => c.Header).ToList()); // the essential columns alone: as narrow as it gets
            shown.Remove(drop);
        }
    }

    private static Table Make(IReadOnlyList<FitColumn> columns, IReadOnlyList<string[]> rows, List<int> shown, bool abbreviate, string? title)
    {
        var t = new Table();
        if (title is not null) t.Title(title);
        foreach (int i in shown)
        {
            var c = new TableColumn(Markup.Escape(abbreviate && columns[i].Short is string s ? s : columns[i].Header)).NoWrap();
            t.AddColumn(columns[i].Right ? c.RightAligned() : c);
        }
        foreach (var r in rows) t.AddRow(shown.Select(i => r[i]).ToArray());
        return t;
    }

    /// <summary>The natural width of a table: its longest line when rendered without a width limit.</summary>
    public static int Width(Table t)
    {
        var w = new StringWriter();
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(w), Ansi = AnsiSupport.No, ColorSystem = ColorSystemSupport.NoColors, Interactive = InteractionSupport.No,
        });
        console.Profile.Width = 10_000;
        var title = t.Title;
        t.Title = null; // a title wraps to the table's width; it never makes it wider
        console.Write(t);
        t.Title = title;
        return w.ToString().Split('\n').Max(l => l.TrimEnd('\r').Length);
    }

    /// <summary>The width of the active console (COLUMNS or the terminal; 200 when stdout is redirected, see Program).</summary>
    public static int ConsoleWidth => AnsiConsole.Profile.Width;
}
