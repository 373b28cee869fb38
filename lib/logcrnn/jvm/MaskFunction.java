package logcrnn.jvm;

import java.io.Serializable;

/**
 * What the two masking functions ({@link Mask}, {@link MaskValues}) share: the check of their
 * token and the {@link Scan} of the last regex and start set they were called with (a
 * function's arguments are the same literals on every row of a query).
 */
abstract class MaskFunction implements Serializable {
  private static final long serialVersionUID = 1L;

  private transient volatile Scan scan;

  /** The scan for {@code regex} and {@code starts}; {@code name} names the function in errors. */
  final Scan scan(String name, String regex, String token, String starts) {
    if (token == null) {
      throw new IllegalArgumentException(name + ": token must not be null");
    }
    Scan s = Scan.of(scan, regex, starts);
    scan = s;
    return s;
  }
}
