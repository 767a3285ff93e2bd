using GaugeTorch.SafeTensors;

namespace GaugeTorch.Tests.Fixtures;

/// <summary>Copies of test checkpoints with chosen bytes changed on disk (no library code involved in the damage).</summary>
public static class DamagedCheckpoints
{
    /// <summary>A copy of <paramref name="source"/> whose tensor <paramref name="tensor"/> (an F32 tensor) has <paramref name="value"/> at flat index <paramref name="index"/>.</summary>
    public static string WithValue(string source, string tensor, long index, float value, string hint = "damaged")
    {
        string dir = CopyOf(source, hint);
        string weights = Path.Combine(dir, SafeTensorStore.SingleFileName);
        long offset;
        using (var f = SafeTensorFile.Open(weights))
        {
            var e = f[tensor];
            if (e.DType != DType.F32) throw new ArgumentException($"{tensor} is {e.DType}, not F32");
            offset = e.Begin + 4 * index;
        }
        using var fs = new FileStream(weights, FileMode.Open, FileAccess.Write);
        fs.Position = offset;
        fs.Write(BitConverter.GetBytes(value));
        return dir;
    }

    /// <summary>A plain copy of a checkpoint directory (files only) in a fresh temporary directory.</summary>
    public static string CopyOf(string source, string hint = "copy")
    {
        string dir = Path.Combine(TestCheckpoints.NewTempDir(hint), "model");
        Directory.CreateDirectory(dir);
        foreach (var file in Directory.GetFiles(source)) File.Copy(file, Path.Combine(dir, Path.GetFileName(file)));
        return dir;
    }
}
