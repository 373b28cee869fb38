package logcrnn.jvm;

import java.io.Serializable;

/**
 * What the two masking functions ({@link Mask}, {@link MaskValues}) share: the check of their
 * token and the {@link Scan}s of the newest {@value #KEEP} regex and start sets they were
 * called with. A function's arguments are the same literals on every row of a query, but one
 * registered function serves every call site: a source whose rules need two scans calls it
 * with two regexes in turn on every row, so keeping only the last scan rebuilt one each call.
 */
abstract class MaskFunction implements Serializable {
  private static final long serialVersionUID = 1L;
  static final int KEEP = ArgCache.KEEP;
  private static final Scan[] NONE = new Scan[0];

  private transient volatile Scan[] scans;

  /** The scan for {@code regex} and {@code starts}; {@code name} names the function in errors. */
  final Scan scan(String name, String regex, String token, String starts) {
    if (token == null) {
      throw new IllegalArgumentException(name + ": token must not be null");
    }
    Scan[] known = scans;
    if (known == null) { // a new or deserialised function
      known = NONE;
    }
    for (Scan s : known) {
      if (s.regex.equals(regex) && s.starts.equals(starts)) {
        return s;
      }
    }
    Scan s = new Scan(regex, starts);
    scans = ArgCache.keepNewest(known, s);
    return s;
  }
}
