package logcrnn.jvm;

import java.util.ArrayList;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.api.java.UDF4;

/**
 * A Spark SQL function {@code (text, regex, token, starts) -> struct<masked, values>}: the
 * text with every match of {@code regex} replaced by {@code token}, and the matched substrings
 * in text order, from one pass of one matcher that asks the regex only where a match can start
 * ({@link Scan}).
 *
 * <p>The same result as Spark's built-ins {@code regexp_replace(text, regex, token)} (the token
 * taken literally) and {@code regexp_extract_all(text, regex, 0)}, which both scan the text with
 * {@code java.util.regex} in the same way; with the built-ins the two results need one heavy
 * scan and two light ones (see {@code logcrnn.masking.Masker.with_masked_values}). A null text
 * gives a null struct. Registered by {@code logcrnn.spark.build_session} under the name
 * {@code logcrnn_mask_values}.
 */
public final class MaskValues extends MaskFunction
    implements UDF4<String, String, String, String, Row> {
  private static final long serialVersionUID = 1L;

  @Override
  public Row call(String text, String regex, String token, String starts) {
    if (text == null) {
      return null;
    }
    Scan s = scan("logcrnn_mask_values", regex, token, starts);
    ArrayList<String> values = new ArrayList<>();
    return RowFactory.create(s.mask(text, token, values), values);
  }
}
