package logcrnn.jvm;

import org.apache.spark.sql.api.java.UDF4;

/**
 * A Spark SQL function {@code (text, regex, token, starts) -> string}: the text with every
 * match of {@code regex} replaced by {@code token}, as Spark's {@code regexp_replace(text,
 * regex, token)} gives it (the token taken literally), asking the regex only where a match can
 * start ({@link Scan}). A null text gives null. Registered by {@code
 * logcrnn.spark.build_session} under the name {@code logcrnn_mask}.
 */
public final class Mask extends MaskFunction
    implements UDF4<String, String, String, String, String> {
  private static final long serialVersionUID = 1L;

  @Override
  public String call(String text, String regex, String token, String starts) {
    if (text == null) {
      return null;
    }
    Scan s = scan("logcrnn_mask", regex, token, starts);
    return s.mask(text, token, null);
  }
}
