using GaugeTorch.SafeTensors;
using TorchSharp;
using static TorchSharp.torch;

namespace GaugeTorch.Model;

/// <summary>
/// A loaded causal language model of any architecture (GPT-2's <c>Gpt2Model</c>, the LLaMA family's
/// <c>LlamaModel</c>): what <c>logits</c> and <c>generate</c> need. Both are TorchSharp modules whose parameter names
/// equal the checkpoint keys, in the compute dtype they were loaded in.
/// </summary>
public interface ICausalLanguageModel : IDisposable
{
    /// <summary>tokens [T] → logits [T, V] in the model's compute dtype.</summary>
    Tensor Logits(IReadOnlyList<int> tokens);

    /// <summary>
    /// Greedy continuation of <paramref name="prompt"/>, each token yielded as soon as it is chosen; stops after
    /// <paramref name="maxNew"/> tokens or at the model's context (<see cref="MaxNewTokens"/>), whichever is first.
    /// </summary>
    IEnumerable<int> GenerateGreedy(IReadOnlyList<int> prompt, int maxNew);

    /// <summary>How many tokens can follow a prompt of <paramref name="promptLength"/> within the model's context.</summary>
    int MaxNewTokens(int promptLength);

    /// <summary>The module's parameters under their checkpoint names (unprefixed), as TorchSharp's nn.Module gives them.</summary>
    IEnumerable<(string name, TorchSharp.Modules.Parameter parameter)> named_parameters(bool recurse = true);
}

/// <summary>
/// Implemented by adapters whose architecture has a TorchSharp module: how <see cref="LanguageModels"/> loads it. A new
/// architecture implements this on its adapter and touches nothing here.
/// </summary>
public interface ILanguageModelFactory
{
    /// <summary>The longest token sequence the model computes as its reference implementation does.</summary>
    int ContextLength { get; }

    ICausalLanguageModel LoadModel(Checkpoint ck, ScalarType dtype, Device? device = null, IProgress<(long Done, long Total)>? progress = null);
}

/// <summary>Loads the module of any opened <see cref="Checkpoint"/>.</summary>
public static class LanguageModels
{
    /// <summary>The full model in <paramref name="dtype"/>, parameters filled name for name from the checkpoint.</summary>
    public static ICausalLanguageModel Load(Checkpoint ck, ScalarType dtype, Device? device = null, IProgress<(long Done, long Total)>? progress = null)
    {
        switch (ck.Architecture)
        {
            case ILanguageModelFactory f:
                return f.LoadModel(ck, dtype, device, progress);
            case global::GaugeTorch.Architectures.Gpt2.Gpt2Adapter g:
                // GPT-2's module predates this interface; its parameter names are the unprefixed keys.
                var m = new global::GaugeTorch.Architectures.Gpt2.Gpt2Model(g.Config, dtype, device, untied: !ck.Tied);
                return FillParameters(m, ck, dtype, progress);
            default:
                throw new NotSupportedException($"{ck.Directory}: no module for architecture '{ck.Architecture.Name}'");
        }
    }

    /// <summary>Tokens a model of <paramref name="ck"/> computes exactly (GPT-2: n_positions).</summary>
    public static int ContextLength(Checkpoint ck) => ck.Architecture is ILanguageModelFactory f ? f.ContextLength : ck.Traits.MaxPositions;

    /// <summary>Parameters the checkpoint defines (a tied head counted once).</summary>
    public static long ParameterCount(Checkpoint ck) =>
        ck.Architecture.Parameters().Sum(p => p.Shape.Aggregate(1L, (a, b) => a * b)) + (ck.Tied ? 0 : (long)ck.Traits.Vocab * ck.Traits.Hidden);

    /// <summary>
    /// Fills every parameter of <paramref name="module"/> from the checkpoint key of its name (<see cref="Checkpoint.Key"/>)
    /// (<see cref="ParameterLoading"/>: zero-copy over the file's private mapping when the dtypes agree on the CPU, else a
    /// converted load). Disposes the module on failure.
    /// </summary>
    public static T FillParameters<T>(T module, Checkpoint ck, ScalarType dtype, IProgress<(long Done, long Total)>? progress = null, bool? zeroCopy = null) where T : nn.Module
    {
        try
        {
            ParameterLoading.Fill(module.named_parameters().ToList(), ck.Store, ck.Key, dtype, progress, zeroCopy);
            return module;
        }
        catch
        {
            module.Dispose();
            throw;
        }
    }
}
