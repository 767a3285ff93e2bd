using System.Text.Json;
using System.Text.Json.Nodes;

namespace GaugeTorch.Cli;

/// <summary>
/// Every JSON report of the CLI goes through here. JSON has no NaN or infinity, and System.Text.Json refuses to write
/// them (compare --json and verify-invariance --json used to end in exit 2 with a raw serializer message, while the
/// table for the same run had printed a verdict): non-finite numbers are written as null, anywhere in the tree, so
/// the JSON never fails and carries the same verdict as the table. "-" writes to standard output.
/// </summary>
public static class JsonOutput
{
    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    /// <summary>Replaces every NaN or ±inf number in <paramref name="node"/> by null, in place; returns the node.</summary>
    public static JsonNode? Sanitize(JsonNode? node)
    {
        switch (node)
        {
            case JsonObject o:
                foreach (var key in o.Select(kv => kv.Key).ToList())
                {
                    if (IsNonFinite(o[key])) o[key] = null;
                    else Sanitize(o[key]);
                }
                break;
            case JsonArray a:
                for (int i = 0; i < a.Count; i++)
                {
                    if (IsNonFinite(a[i])) a[i] = null;
                    else Sanitize(a[i]);
                }
                break;
        }
        return node;
    }

    private static bool IsNonFinite(JsonNode? n) =>
        n is JsonValue v && ((v.TryGetValue(out double d) && !double.IsFinite(d)) || (v.TryGetValue(out float f) && !float.IsFinite(f)));

    public static string Serialize(JsonNode node) => Sanitize(node)!.ToJsonString(Indented);

    /// <summary>Writes <paramref name="node"/> to <paramref name="path"/> atomically, or to stdout for "-".</summary>
    public static void Write(string path, JsonNode node, IEnumerable<string>? inputs = null)
    {
        string text = Serialize(node);
        if (OutputPaths.IsStdout(path)) Console.Out.WriteLine(text);
        else AtomicFile.WriteAllText(path, text + "\n", inputs);
    }

    /// <summary>The --json option: a file, or "-" for standard output instead of the tables.</summary>
    public static System.CommandLine.Option<string?> Option(string what = "the results") => new("--json")
    {
        Description = $"Write {what} as JSON to this file (\"-\": to standard output, instead of the tables). NaN and infinite numbers are written as null.",
    };
}
