package logcrnn.jvm;

import java.util.HashSet;
import org.apache.spark.sql.catalyst.util.ArrayData;
import org.apache.spark.sql.catalyst.util.GenericArrayData;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.unsafe.Platform;
import org.apache.spark.unsafe.types.UTF8String;

/**
 * {@code logcrnn_fn.extract_all(text, regex, starts) -> array<string>}: the distinct matches of
 * {@code regex} in {@code text}, in the order of their first occurrence; an empty array for a
 * null text. The same as Spark's {@code array_distinct(regexp_extract_all(text, '(' || regex ||
 * ')', 1))}: one {@link Scan} finds what {@code Matcher.find()} finds, asking the regex only
 * where a match can start ({@code starts}: {@code logcrnn.masking.Masker.jvm_scans}'s start
 * tests; empty: every position). For ASCII text (character positions are byte positions) the
 * matches are views of the text's bytes.
 */
public final class ExtractAll extends Functions.StringFunction<ArrayData> {
  private static final long serialVersionUID = 1L;
  static final String NAME = "extract_all";
  private static final GenericArrayData EMPTY = new GenericArrayData(new Object[0]);

  public ExtractAll() {
    super(NAME, DataTypes.createArrayType(DataTypes.StringType), false, "text", "regex", "starts");
  }

  private static final ArgCache<Scan> SCANS =
      new ArgCache<>((regex, starts) -> new Scan(regex.toString(), starts.toString()));

  private static Scan scan(UTF8String regex, UTF8String starts) {
    if (regex == null || starts == null) {
      throw new IllegalArgumentException(
          "logcrnn_fn.extract_all: the regex and the starts must not be null");
    }
    return SCANS.get(regex, starts);
  }

  /** Called by Spark's generated code. */
  public static ArrayData invoke(UTF8String text, UTF8String regex, UTF8String starts) {
    Scan scan = scan(regex, starts);
    if (text == null) {
      return EMPTY;
    }
    boolean ascii = Utf8Ok.ascii(text);
    String s = ascii ? latin1(text) : text.toString();
    int[] spans = scan.spans(s, ascii);
    if (spans == null) {
      return EMPTY;
    }
    int count = 0;
    while (spans[2 * count] >= 0) {
      count++;
    }
    UTF8String[] out = new UTF8String[count];
    HashSet<UTF8String> seen = count > 8 ? new HashSet<>() : null;
    int k = 0;
    for (int i = 0; i < count; i++) {
      int from = spans[2 * i];
      int to = spans[2 * i + 1];
      UTF8String match =
          ascii
              ? UTF8String.fromAddress(
                  text.getBaseObject(), text.getBaseOffset() + from, to - from)
              : UTF8String.fromString(s.substring(from, to));
      if (seen != null ? seen.add(match) : !contains(out, k, match)) {
        out[k++] = match;
      }
    }
    return new GenericArrayData(k == count ? out : java.util.Arrays.copyOf(out, k));
  }

  /** ASCII text as a String, its bytes copied once (no decoding pass). */
  @SuppressWarnings("deprecation")
  private static String latin1(UTF8String text) {
    Object base = text.getBaseObject();
    long offset = text.getBaseOffset();
    if (base instanceof byte[] && offset >= Platform.BYTE_ARRAY_OFFSET) {
      int at = (int) (offset - Platform.BYTE_ARRAY_OFFSET);
      return new String((byte[]) base, 0, at, text.numBytes());
    }
    return text.toString();
  }

  private static boolean contains(UTF8String[] values, int n, UTF8String value) {
    for (int i = 0; i < n; i++) {
      if (values[i].equals(value)) {
        return true;
      }
    }
    return false;
  }
}
