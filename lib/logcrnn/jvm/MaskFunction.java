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
  static final int KEEP = 16;

  private transient volatile Scan[] scans;

  /** The scan for {@code regex} and {@code starts}; {@code name} names the function in errors. */
  final Scan scan(String name, String regex, String token, String starts) {
    if (token == null) {
      throw new IllegalArgumentException(name + ": token must not be null");
    }
    Scan[] known = scans;
    int n = known == null ? 0 : known.length;
    for (int i = 0; i < n; i++) {
      if (known[i].regex.equals(regex) && known[i].starts.equals(starts)) {
        return known[i];
      }
    }
    Scan s = new Scan(regex, starts);
    Scan[] next = new Scan[Math.min(n + 1, KEEP)];
    next[0] = s;
    if (n > 0) {
      System.arraycopy(known, 0, next, 1, next.length - 1);
    }
    scans = next;
    return s;
  }
}
