package logcrnn.jvm;

import java.util.ArrayList;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.api.java.UDF3;

/**
 * A Spark SQL function {@code (text, regex, token) -> struct<masked, values>}: the text with
 * every match of {@code regex} replaced by {@code token}, and the matched substrings in text
 * order, from one pass of one {@link Matcher}.
 *
 * <p>The same result as Spark's built-ins {@code regexp_replace(text, regex, token)} (the token
 * taken literally) and {@code regexp_extract_all(text, regex, 0)}, which both scan the text with
 * {@code java.util.regex} in the same way; with the built-ins the two results need one heavy
 * scan and two light ones (see {@code logcrnn.masking.Masker.with_masked_values}). A null text
 * gives a null struct. Registered by {@code logcrnn.spark.build_session} under the name
 * {@code logcrnn_mask_values}.
 */
public final class MaskValues implements UDF3<String, String, String, Row> {
  private static final long serialVersionUID = 1L;

  /** The last regex this instance compiled, with its pattern (one immutable pair). */
  private static final class Compiled {
    final String regex;
    final Pattern pattern;

    Compiled(String regex) {
      this.regex = regex;
      this.pattern = Pattern.compile(regex);
    }
  }

  private transient volatile Compiled compiled;

  @Override
  public Row call(String text, String regex, String token) {
    if (text == null) {
      return null;
    }
    if (regex == null || token == null) {
      throw new IllegalArgumentException("logcrnn_mask_values: regex and token must not be null");
    }
    Compiled c = compiled;
    if (c == null || !c.regex.equals(regex)) {
      c = new Compiled(regex);
      compiled = c;
    }
    Matcher m = c.pattern.matcher(text);
    ArrayList<String> values = new ArrayList<>();
    if (!m.find()) {
      return RowFactory.create(text, values);
    }
    StringBuilder out = new StringBuilder(text.length());
    int last = 0;
    do {
      out.append(text, last, m.start()).append(token);
      values.add(m.group());
      last = m.end();
    } while (m.find());
    out.append(text, last, text.length());
    return RowFactory.create(out.toString(), values);
  }
}
