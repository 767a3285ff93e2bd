using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.Model;
using GaugeTorch.Text;
using TorchSharp;

namespace GaugeTorch.Cli;

/// <summary>
/// The architecture-neutral model path of the commands that run a model (inspect, logits, generate): open any
/// supported checkpoint through <see cref="Checkpoint"/> (<see cref="CliCommon.OpenCheckpoint"/>), load its module as an
/// <see cref="ICausalLanguageModel"/>, and find the model's tokenizer (GPT-2: the built-in BPE; others: the tokenizer.json
/// in the model directory), which <see cref="TextInput"/> uses for --text / --prompt.
/// </summary>
public static class CliModels
{

    /// <summary>
    /// Loads the full model, with a progress bar when stderr is a terminal and the load is large, and refuses NaN or
    /// infinite weights by name unless <paramref name="allowNonFinite"/>.
    /// </summary>
    public static ICausalLanguageModel Load(Checkpoint ck, torch.ScalarType dtype, bool allowNonFinite = false)
    {
        ICausalLanguageModel? model = null;
        if (ck.Store.TotalBytes < 200_000_000) model = LanguageModels.Load(ck, dtype, ComputeDevice.Default);
        else
            CliCommon.Progress().Start(ctx =>
            {
                var task = ctx.AddTask($"loading {Path.GetFileName(ck.Directory)}", maxValue: 1.0);
                model = LanguageModels.Load(ck, dtype, ComputeDevice.Default, new Progress<(long Done, long Total)>(p => task.Value = (double)p.Done / Math.Max(1, p.Total)));
                task.Value = 1.0;
            });
        try
        {
            if (!allowNonFinite) FiniteWeights.RequireModule(ck, model!);
        }
        catch
        {
            model!.Dispose();
            throw;
        }
        return model!;
    }

    /// <summary>GPT-2's built-in BPE; for other architectures the directory's tokenizer.json, or null when there is none.</summary>
    public static ITextTokenizer? Tokenizer(Checkpoint ck)
    {
        if (ck.Architecture.Name == "gpt2") return Gpt2TextTokenizer.Instance;
        return HfTokenizer.Find(ck.Directory) is string p ? HfTokenizer.Open(p) : null;
    }
}
