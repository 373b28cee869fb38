package logcrnn.jvm;

import java.nio.charset.StandardCharsets;
import org.apache.spark.sql.catalyst.util.ArrayData;
import org.apache.spark.sql.catalyst.util.GenericArrayData;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.unsafe.Platform;
import org.apache.spark.unsafe.types.UTF8String;

/**
 * {@code logcrnn_fn.cut_fields(line, plan) -> array<string>}: the fields of a log line cut by
 * a Loghub header format's "delimited" plan, or null when the line does not fit it.
 *
 * <p>It does in one pass over the line's UTF-8 bytes what {@code
 * logcrnn.formats.CompiledFormat.apply} does with Spark's built-ins, with the same result:
 * strip ASCII blanks from both ends, check and drop the literal prefix, then cut the fields
 * off the front of the rest, a run of single-space separators as {@code String.split(" ", n +
 * 1)} cuts them (the call Spark's {@code split} makes; an empty piece is a mismatch) and any
 * other separator at its first occurrence (the field right-trimmed of spaces when blanks may
 * precede the separator); the rest, left-trimmed of spaces when blanks may follow the last
 * separator, is the last field. A null line gives null. The fields are views of the line's
 * bytes, not copies. Byte positions stand for character positions because the line is valid
 * UTF-8 (the ingest decodes any other first): a separator's bytes cannot start inside a
 * character.
 *
 * <p>{@code plan} is written by {@code logcrnn.formats.CompiledFormat.jvm_plan}: items joined
 * by U+0001; the first is the prefix, the second {@code 1} or {@code 0} (trim the last field),
 * then one item per separator, a digit (bit 0: blanks may precede it, so the field is
 * right-trimmed; bit 1: a plain blank, cut like the split) followed by the text searched for
 * ({@code logcrnn.formats.Separator.needle}).
 */
public final class CutFields extends Functions.StringFunction<ArrayData> {
  private static final long serialVersionUID = 1L;
  static final String NAME = "cut_fields";

  public CutFields() {
    super(NAME, DataTypes.createArrayType(DataTypes.StringType), true, "line", "plan");
  }

  /** A parsed plan. */
  private static final class Plan {
    final byte[] prefix;
    final boolean trimLast;
    final boolean[] blank;
    final byte[][] needle;
    final boolean[] lead;

    Plan(UTF8String planText) {
      String[] items = planText.toString().split("\u0001", -1);
      if (items.length < 2) {
        throw new IllegalArgumentException("logcrnn_fn.cut_fields: bad plan " + planText);
      }
      prefix = items[0].getBytes(StandardCharsets.UTF_8);
      trimLast = items[1].equals("1");
      int n = items.length - 2;
      blank = new boolean[n];
      needle = new byte[n][];
      lead = new boolean[n];
      for (int i = 0; i < n; i++) {
        String item = items[i + 2];
        int flags = item.charAt(0) - '0';
        lead[i] = (flags & 1) != 0;
        blank[i] = (flags & 2) != 0;
        needle[i] = item.substring(1).getBytes(StandardCharsets.UTF_8);
      }
    }
  }

  private static final UTF8String NONE = UTF8String.EMPTY_UTF8;
  private static final ArgCache<Plan> PLANS = new ArgCache<>((plan, none) -> new Plan(plan));

  private static Plan plan(UTF8String text) {
    if (text == null) {
      throw new IllegalArgumentException("logcrnn_fn.cut_fields: the plan must not be null");
    }
    return PLANS.get(text, NONE);
  }

  private static boolean blank(byte b) {
    return b == ' ' || b == '\t' || b == '\n' || b == '\r' || b == 0x0b || b == 0x0c;
  }

  /** Called by Spark's generated code. */
  public static ArrayData invoke(UTF8String line, UTF8String planText) {
    Plan p = plan(planText);
    if (line == null) {
      return null;
    }
    Object base = line.getBaseObject();
    long at0 = line.getBaseOffset();
    int lo = 0;
    int hi = line.numBytes();
    while (lo < hi && blank(Platform.getByte(base, at0 + lo))) {
      lo++;
    }
    while (hi > lo && blank(Platform.getByte(base, at0 + hi - 1))) {
      hi--;
    }
    if (!startsWith(base, at0, lo, hi, p.prefix)) {
      return null;
    }
    lo += p.prefix.length;
    int n = p.needle.length;
    Object[] out = new Object[n + 1];
    int k = 0;
    int i = 0;
    while (i < n) {
      if (p.blank[i]) {
        int j = i;
        while (j < n && p.blank[j]) {
          j++;
        }
        // String.split(" ", count + 1): count pieces, each ended by the next space
        for (int c = i; c < j; c++) {
          int sp = indexOf(base, at0, lo, hi, (byte) ' ');
          if (sp <= lo) { // no space left, or an empty piece
            return null;
          }
          out[k++] = UTF8String.fromAddress(base, at0 + lo, sp - lo);
          lo = sp + 1;
        }
        i = j;
        continue;
      }
      byte[] needle = p.needle[i];
      int at = indexOf(base, at0, lo, hi, needle);
      if (at < 0) {
        return null;
      }
      int end = at;
      if (p.lead[i]) {
        while (end > lo && Platform.getByte(base, at0 + end - 1) == ' ') {
          end--;
        }
      }
      out[k++] = UTF8String.fromAddress(base, at0 + lo, end - lo);
      lo = at + needle.length;
      i++;
    }
    if (p.trimLast) {
      while (lo < hi && Platform.getByte(base, at0 + lo) == ' ') {
        lo++;
      }
    }
    out[k] = UTF8String.fromAddress(base, at0 + lo, hi - lo);
    return new GenericArrayData(out);
  }

  private static boolean startsWith(Object base, long at0, int lo, int hi, byte[] prefix) {
    if (hi - lo < prefix.length) {
      return false;
    }
    for (int i = 0; i < prefix.length; i++) {
      if (Platform.getByte(base, at0 + lo + i) != prefix[i]) {
        return false;
      }
    }
    return true;
  }

  private static int indexOf(Object base, long at0, int lo, int hi, byte b) {
    for (int i = lo; i < hi; i++) {
      if (Platform.getByte(base, at0 + i) == b) {
        return i;
      }
    }
    return -1;
  }

  /** The first position in {@code [lo, hi)} where {@code needle} starts, or -1. */
  static int indexOf(Object base, long at0, int lo, int hi, byte[] needle) {
    int m = needle.length;
    if (m == 0) {
      return lo;
    }
    byte first = needle[0];
    for (int i = lo; i + m <= hi; i++) {
      if (Platform.getByte(base, at0 + i) != first) {
        continue;
      }
      int j = 1;
      while (j < m && Platform.getByte(base, at0 + i + j) == needle[j]) {
        j++;
      }
      if (j == m) {
        return i;
      }
    }
    return -1;
  }
}
