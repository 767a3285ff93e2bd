using TorchSharp;

namespace GaugeTorch.SafeTensors;

/// <summary>Element types of the safetensors format (the names are the spec's strings).</summary>
public enum DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL }

public static class DTypes
{
    public static int Size(this DType d) => d switch
    {
        DType.F64 or DType.I64 => 8,
        DType.F32 or DType.I32 => 4,
        DType.F16 or DType.BF16 or DType.I16 => 2,
        DType.I8 or DType.U8 or DType.BOOL => 1,
        _ => throw new ArgumentOutOfRangeException(nameof(d)),
    };

    /// <summary>Unit roundoff u (half an ulp at 1): 2⁻⁵³ F64, 2⁻²⁴ F32, 2⁻¹¹ F16, 2⁻⁸ BF16.</summary>
    public static double UnitRoundoff(this DType d) => d switch
    {
        DType.F64 => Math.Pow(2, -53),
        DType.F32 => Math.Pow(2, -24),
        DType.F16 => Math.Pow(2, -11),
        DType.BF16 => Math.Pow(2, -8),
        _ => throw new NotSupportedException($"dtype {d} is not a floating-point parameter dtype"),
    };

    public static bool IsFloat(this DType d) => d is DType.F64 or DType.F32 or DType.F16 or DType.BF16;

    /// <summary>Parses a dtype exactly as the safetensors spec spells it ("F32", "BOOL", ...). Numbers, lower case,
    /// whitespace and comma lists are rejected (Enum.TryParse would accept "1" or "F64,F32").</summary>
    public static bool TryParse(string s, out DType d)
    {
        switch (s)
        {
            case "F64": d = DType.F64; return true;
            case "F32": d = DType.F32; return true;
            case "F16": d = DType.F16; return true;
            case "BF16": d = DType.BF16; return true;
            case "I64": d = DType.I64; return true;
            case "I32": d = DType.I32; return true;
            case "I16": d = DType.I16; return true;
            case "I8": d = DType.I8; return true;
            case "U8": d = DType.U8; return true;
            case "BOOL": d = DType.BOOL; return true;
            default: d = default; return false;
        }
    }

    public static string Name(this DType d) => d.ToString();

    public static torch.ScalarType ToScalarType(this DType d) => d switch
    {
        DType.F64 => torch.ScalarType.Float64,
        DType.F32 => torch.ScalarType.Float32,
        DType.F16 => torch.ScalarType.Float16,
        DType.BF16 => torch.ScalarType.BFloat16,
        DType.I64 => torch.ScalarType.Int64,
        DType.I32 => torch.ScalarType.Int32,
        DType.I16 => torch.ScalarType.Int16,
        DType.I8 => torch.ScalarType.Int8,
        DType.U8 => torch.ScalarType.Byte,
        DType.BOOL => torch.ScalarType.Bool,
        _ => throw new ArgumentOutOfRangeException(nameof(d)),
    };

    public static DType FromScalarType(torch.ScalarType t) => t switch
    {
        torch.ScalarType.Float64 => DType.F64,
        torch.ScalarType.Float32 => DType.F32,
        torch.ScalarType.Float16 => DType.F16,
        torch.ScalarType.BFloat16 => DType.BF16,
        torch.ScalarType.Int64 => DType.I64,
        torch.ScalarType.Int32 => DType.I32,
        torch.ScalarType.Int16 => DType.I16,
        torch.ScalarType.Int8 => DType.I8,
        torch.ScalarType.Byte => DType.U8,
        torch.ScalarType.Bool => DType.BOOL,
        _ => throw new NotSupportedException($"torch dtype {t} has no safetensors equivalent"),
    };

    /// <summary>Parses user-facing names: F32, float32, fp32, f32, ... (case-insensitive).</summary>
    public static DType ParseUser(string s) => s.Trim().ToLowerInvariant() switch
    {
        "f64" or "float64" or "fp64" or "double" => DType.F64,
        "f32" or "float32" or "fp32" or "float" => DType.F32,
        "f16" or "float16" or "fp16" or "half" => DType.F16,
        "bf16" or "bfloat16" => DType.BF16,
        _ => throw new ArgumentException($"unknown dtype '{s}' (expected F64, F32, F16 or BF16)"),
    };
}
