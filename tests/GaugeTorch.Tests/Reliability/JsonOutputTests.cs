using System.Text.Json.Nodes;
using GaugeTorch.Cli;
using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.Tests.Fixtures;

namespace GaugeTorch.Tests.Reliability;

/// <summary>Issue 11, item 2: JSON output never fails on NaN or infinity, and "-" means standard output.</summary>
public class JsonOutputTests
{
    [Fact]
    public void NonFiniteNumbersBecomeNullAnywhereInTheTree()
    {
        var o = new JsonObject
        {
            ["nan"] = double.NaN,
            ["inf"] = double.PositiveInfinity,
            ["finite"] = 1.5,
            ["f32"] = float.NegativeInfinity,
            ["int"] = 3,
            ["text"] = "NaN",
            ["nested"] = new JsonObject { ["list"] = new JsonArray(1.0, double.NaN, new JsonObject { ["x"] = double.NegativeInfinity }) },
        };
        // System.Text.Json refuses these outright: this is the exit 2 of compare --json and verify-invariance --json.
        Assert.ThrowsAny<ArgumentException>(() => o.DeepClone().ToJsonString());
        var back = JsonNode.Parse(JsonOutput.Serialize(o))!;
        Assert.Null(back["nan"]);
        Assert.Null(back["inf"]);
        Assert.Null(back["f32"]);
        Assert.Equal(1.5, back["finite"]!.GetValue<double>());
        Assert.Equal(3, back["int"]!.GetValue<int>());
        Assert.Equal("NaN", back["text"]!.GetValue<string>());
        var list = back["nested"]!["list"]!.AsArray();
        Assert.Equal(1.0, list[0]!.GetValue<double>());
        Assert.Null(list[1]);
        Assert.Null(list[2]!["x"]);
        Assert.True(back.AsObject().ContainsKey("nan")); // the key stays, with null
    }

    [Fact]
    public void DashWritesJsonToStdoutInsteadOfTheTables()
    {
        string model = TestCheckpoints.Get("json-dash", options: new MakeCheckpointOptions { Seed = 62 });
        foreach (var args in new[]
                 {
                     new[] { "inspect", model, "--json", "-" },
                     ["compare", model, model, "--json", "-"],
                     ["verify-invariance", model, "--transforms", "1", "--tokens", "1,2,3", "--families", "qk", "--no-controls", "--json", "-"],
                 })
        {
            var (code, stdout, err) = CliRunner.Run(args);
            Assert.True(code == 0, $"{args[0]}: {err}");
            var node = JsonNode.Parse(stdout); // the whole of stdout is one JSON document: no table around it
            Assert.NotNull(node);
        }
    }
}
