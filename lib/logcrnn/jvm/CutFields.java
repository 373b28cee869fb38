package logcrnn.jvm;

import java.util.ArrayList;
import org.apache.spark.sql.api.java.UDF2;

/**
 * A Spark SQL function {@code (line, plan) -> array<string>}: the fields of a log line cut by
 * a Loghub header format's "delimited" plan, or null when the line does not fit it.
 *
 * <p>It does in one pass what {@code logcrnn.formats.CompiledFormat.apply} does with Spark's
 * built-ins, with the same result: strip ASCII blanks from both ends, check and drop the
 * literal prefix, then cut the fields off the front of the rest, a run of single-space
 * separators with one {@code String.split(" ", n + 1)} (the call Spark's {@code split} makes;
 * an empty piece is a mismatch) and any other separator at its first occurrence (the field
 * right-trimmed of spaces when blanks may precede the separator); the rest, left-trimmed of
 * spaces when blanks may follow the last separator, is the last field. A null line gives null.
 *
 * <p>{@code plan} is written by {@code logcrnn.formats.CompiledFormat.jvm_plan}: items joined
 * by U+0001; the first is the prefix, the second {@code 1} or {@code 0} (trim the last field),
 * then one item per separator, a digit (bit 0: blanks may precede it, so the field is
 * right-trimmed; bit 1: a plain blank, cut by the split) followed by the text searched for
 * ({@code logcrnn.formats.Separator.needle}).
 */
public final class CutFields implements UDF2<String, String, String[]> {
  private static final long serialVersionUID = 1L;
  private static final String BLANKS = " \t\n\r\u000b\u000c";

  /** A parsed plan, with the text it was parsed from. */
  private static final class Plan {
    final String text;
    final String prefix;
    final boolean trimLast;
    final boolean[] blank;
    final String[] needle;
    final boolean[] lead;

    Plan(String text) {
      this.text = text;
      String[] items = text.split("\u0001", -1);
      if (items.length < 2) {
        throw new IllegalArgumentException("logcrnn_cut_fields: bad plan " + text);
      }
      prefix = items[0];
      trimLast = items[1].equals("1");
      int n = items.length - 2;
      blank = new boolean[n];
      needle = new String[n];
      lead = new boolean[n];
      for (int i = 0; i < n; i++) {
        String item = items[i + 2];
        int flags = item.charAt(0) - '0';
        lead[i] = (flags & 1) != 0;
        blank[i] = (flags & 2) != 0;
        needle[i] = item.substring(1);
      }
    }
  }

  private transient volatile Plan plan;

  private static boolean blank(char c) {
    return BLANKS.indexOf(c) >= 0;
  }

  private static String strip(String s) {
    int lo = 0;
    int hi = s.length();
    while (lo < hi && blank(s.charAt(lo))) {
      lo++;
    }
    while (hi > lo && blank(s.charAt(hi - 1))) {
      hi--;
    }
    return s.substring(lo, hi);
  }

  @Override
  public String[] call(String line, String planText) {
    if (line == null) {
      return null;
    }
    Plan p = plan;
    if (p == null || !p.text.equals(planText)) {
      p = new Plan(planText);
      plan = p;
    }
    String r = line;
    if (!r.isEmpty() && (blank(r.charAt(0)) || blank(r.charAt(r.length() - 1)))) {
      r = strip(r);
    }
    if (!p.prefix.isEmpty()) {
      if (!r.startsWith(p.prefix)) {
        return null;
      }
      r = r.substring(p.prefix.length());
    }
    int n = p.needle.length;
    ArrayList<String> out = new ArrayList<>(n + 1);
    int i = 0;
    while (i < n) {
      if (p.blank[i]) {
        int j = i;
        while (j < n && p.blank[j]) {
          j++;
        }
        int count = j - i;
        String[] parts = r.split(" ", count + 1);
        if (parts.length != count + 1) {
          return null;
        }
        for (int k = 0; k < count; k++) {
          if (parts[k].isEmpty()) {
            return null;
          }
          out.add(parts[k]);
        }
        r = parts[count];
        i = j;
        continue;
      }
      int at = r.indexOf(p.needle[i]);
      if (at < 0) {
        return null;
      }
      int end = at;
      if (p.lead[i]) {
        while (end > 0 && r.charAt(end - 1) == ' ') {
          end--;
        }
      }
      out.add(r.substring(0, end));
      r = r.substring(at + p.needle[i].length());
      i++;
    }
    if (p.trimLast) {
      int lo = 0;
      while (lo < r.length() && r.charAt(lo) == ' ') {
        lo++;
      }
      r = r.substring(lo);
    }
    out.add(r);
    return out.toArray(new String[0]);
  }
}
