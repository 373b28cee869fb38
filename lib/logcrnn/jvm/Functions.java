package logcrnn.jvm;

import java.util.Arrays;
import org.apache.spark.sql.catalyst.analysis.NoSuchFunctionException;
import org.apache.spark.sql.connector.catalog.FunctionCatalog;
import org.apache.spark.sql.connector.catalog.Identifier;
import org.apache.spark.sql.connector.catalog.functions.BoundFunction;
import org.apache.spark.sql.connector.catalog.functions.ScalarFunction;
import org.apache.spark.sql.connector.catalog.functions.UnboundFunction;
import org.apache.spark.sql.types.DataType;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructField;
import org.apache.spark.sql.types.StructType;
import org.apache.spark.sql.util.CaseInsensitiveStringMap;

/**
 * A Spark function catalog of the project's ingest functions: {@code logcrnn_fn.utf8_ok},
 * {@code logcrnn_fn.cut_fields}, {@code logcrnn_fn.fixed_timestamp} and {@code
 * logcrnn_fn.extract_all} ({@code logcrnn.spark.build_session} sets {@code
 * spark.sql.catalog.logcrnn_fn} to this class).
 *
 * <p>Each is a {@link ScalarFunction} with a static {@code invoke} method on Spark's own row
 * types ({@code UTF8String}, {@code ArrayData}), which Spark's generated code calls directly:
 * no conversion of the line to a Java {@code String} and back, as a {@code UDF} has, and the
 * strings they return are views of the line's bytes where they can be.
 */
public final class Functions implements FunctionCatalog {
  private static final String[] NAMES = {
    Utf8Ok.NAME, CutFields.NAME, FixedTimestamp.NAME, ExtractAll.NAME
  };

  private String name = "logcrnn_fn";

  @Override
  public void initialize(String catalogName, CaseInsensitiveStringMap options) {
    this.name = catalogName;
  }

  @Override
  public String name() {
    return name;
  }

  @Override
  public Identifier[] listFunctions(String[] namespace) {
    return Arrays.stream(NAMES).map(n -> Identifier.of(namespace, n)).toArray(Identifier[]::new);
  }

  @Override
  public UnboundFunction loadFunction(Identifier ident) throws NoSuchFunctionException {
    if (ident.namespace().length == 0) {
      switch (ident.name().toLowerCase(java.util.Locale.ROOT)) {
        case Utf8Ok.NAME:
          return new Utf8Ok();
        case CutFields.NAME:
          return new CutFields();
        case FixedTimestamp.NAME:
          return new FixedTimestamp();
        case ExtractAll.NAME:
          return new ExtractAll();
        default:
          break;
      }
    }
    throw new NoSuchFunctionException(ident);
  }

  /**
   * A function of string arguments only, bound to itself: the base of the catalog's functions.
   */
  abstract static class StringFunction<R> implements UnboundFunction, ScalarFunction<R> {
    private static final long serialVersionUID = 1L;
    private final String name;
    private final DataType resultType;
    private final boolean nullable;
    private final String[] arguments;

    /**
     * A function {@code name(arguments...) -> resultType}; {@code nullable}: it may return
     * null.
     */
    StringFunction(String name, DataType resultType, boolean nullable, String... arguments) {
      this.name = name;
      this.resultType = resultType;
      this.nullable = nullable;
      this.arguments = arguments;
    }

    /** The names of the arguments, in order (their count is the function's arity). */
    final String[] arguments() {
      return arguments.clone();
    }

    @Override
    public final String name() {
      return name;
    }

    @Override
    public final DataType resultType() {
      return resultType;
    }

    @Override
    public final boolean isResultNullable() {
      return nullable;
    }

    @Override
    public final BoundFunction bind(StructType inputType) {
      String[] args = arguments();
      StructField[] fields = inputType.fields();
      boolean ok = fields.length == args.length;
      for (int i = 0; ok && i < fields.length; i++) {
        ok = fields[i].dataType().equals(DataTypes.StringType);
      }
      if (!ok) {
        throw new UnsupportedOperationException(
            name() + " takes (" + String.join(", ", args) + "), all strings; got "
                + inputType.simpleString());
      }
      return this;
    }

    @Override
    public final DataType[] inputTypes() {
      DataType[] types = new DataType[arguments().length];
      Arrays.fill(types, DataTypes.StringType);
      return types;
    }

    @Override
    public String description() {
      return name() + "(" + String.join(", ", arguments()) + ")";
    }
  }
}
