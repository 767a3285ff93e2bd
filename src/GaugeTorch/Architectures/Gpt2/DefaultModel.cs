namespace GaugeTorch.Architectures.Gpt2;

/// <summary>The small trained GPT-2 that ships with GaugeTorch, used whenever a command is given no MODEL.</summary>
public static class DefaultModel
{
    public const string FolderName = "demo-gpt2";

    /// <summary>The demo model's directory beside the running assembly (copied there by the build).</summary>
    public static string Path
    {
        get
        {
            string env = Environment.GetEnvironmentVariable("GAUGETORCH_DEFAULT_MODEL") ?? "";
            if (env.Length > 0) return env;
            return System.IO.Path.Combine(AppContext.BaseDirectory, FolderName);
        }
    }
}
