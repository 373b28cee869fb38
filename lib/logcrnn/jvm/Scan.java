package logcrnn.jvm;

import java.util.List;
import java.util.concurrent.ConcurrentHashMap;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * One masking scan: a compiled regex and, per branch of it, what rules that branch out at a
 * position; shared by {@link Mask} and {@link MaskValues}.
 *
 * <p>{@link #mask} replaces every match of the regex by the token and collects the matched
 * substrings: the result of {@code Matcher.find()} from the start of the text, as Spark's
 * {@code regexp_replace} and {@code regexp_extract_all} scan it. At each position it first
 * works out which branches (the regex's alternatives, in order) can start a match there, from
 * plain character tests, and asks the regex only where one is left, with the alternation of
 * only those left. At a fixed position an alternation's match is its first branch that
 * matches, so leaving out branches that cannot match there changes nothing.
 *
 * <p>The branches come from {@code logcrnn.masking.Masker.jvm_scans}: entries joined by
 * U+0001, each five fields joined by U+0002: the branch's regex; the Java class body of its
 * first characters; {@code a} when those are not known (the branch is tried everywhere),
 * {@code w} when it starts with {@code \b}, or empty; the class body of its second
 * characters, or empty; the class body of the characters its leading {@code (?<![...])}
 * rejects, or empty. The tests are conservative: characters outside ASCII pass every test, a
 * word start is ruled out only between two ASCII letters, digits or {@code _} (word characters
 * of every JDK's {@code \b}), and at a position left the regex decides, with transparent and
 * non-anchoring bounds, so its look-behinds, {@code \b} and anchors see the whole text exactly
 * as {@code find()} does. An empty start set tries the whole regex at every position (plain
 * {@code find()}).
 */
final class Scan {
  final String regex;
  final String starts;
  final Pattern pattern;
  /** The branches' regexes; null: plain find(). */
  private final String[] branches;
  /** Per ASCII character: the branches it may start with no other test, and those with one. */
  private final long[] always;
  private final int[][] tested;
  private final boolean[] wordStart;
  private final boolean[][] second;
  private final boolean[][] notAfter;
  private final long all;
  /** The one ASCII character any branch may start with, or -1 when there are more or none. */
  private final int onlyStart;
  /** The literal text every match starts with (one branch only), or null. */
  private final String prefix;
  private final ConcurrentHashMap<Long, Pattern> subsets = new ConcurrentHashMap<>();

  Scan(String regex, String starts) {
    if (regex == null || starts == null) {
      throw new IllegalArgumentException("logcrnn masking: regex and starts must not be null");
    }
    this.regex = regex;
    this.starts = starts;
    this.pattern = Pattern.compile(regex);
    if (starts.isEmpty() || regex.contains("\\G")) {
      branches = null;
      always = null;
      tested = null;
      wordStart = null;
      second = null;
      notAfter = null;
      all = 0;
      onlyStart = -1;
      prefix = null;
      return;
    }
    String[] entries = starts.split("\u0001", -1);
    int k = entries.length;
    if (k > 63) {
      throw new IllegalArgumentException("logcrnn masking: more than 63 branches in " + regex);
    }
    branches = new String[k];
    wordStart = new boolean[k];
    second = new boolean[k][];
    notAfter = new boolean[k][];
    boolean[][] first = new boolean[k][];
    for (int r = 0; r < k; r++) {
      String[] f = entries[r].split("\u0002", -1);
      if (f.length != 5 || !(f[2].isEmpty() || f[2].equals("a") || f[2].equals("w"))) {
        throw new IllegalArgumentException("logcrnn masking: bad branch " + entries[r]);
      }
      branches[r] = f[0];
      if (f[2].equals("a")) {
        first[r] = new boolean[128];
        java.util.Arrays.fill(first[r], true);
      } else {
        first[r] = table(f[1]);
      }
      wordStart[r] = f[2].equals("w");
      second[r] = f[3].isEmpty() ? null : table(f[3]);
      notAfter[r] = f[4].isEmpty() ? null : table(f[4]);
    }
    all = k == 63 ? Long.MAX_VALUE : (1L << k) - 1;
    always = new long[128];
    tested = new int[128][];
    int[] buf = new int[k];
    for (char c = 0; c < 128; c++) {
      int m = 0;
      for (int r = 0; r < k; r++) {
        if (!first[r][c]) {
          continue;
        }
        if ((wordStart[r] && word(c)) || second[r] != null || notAfter[r] != null) {
          buf[m++] = r;
        } else {
          always[c] |= 1L << r;
        }
      }
      tested[c] = m == 0 ? null : java.util.Arrays.copyOf(buf, m);
    }
    int only = -1;
    for (char c = 0; c < 128; c++) {
      if (always[c] != 0 || tested[c] != null) {
        only = only == -1 ? c : -2;
      }
    }
    onlyStart = only >= 0 ? only : -1;
    prefix = k == 1 ? literalPrefix(branches[0]) : null;
  }

  /**
   * The characters every match of {@code regex} starts with, read conservatively from its
   * front: plain ASCII characters up to the first one that is special, escaped, quantified or
   * grouped; null when fewer than two, or when the regex holds a {@code |} anywhere.
   */
  static String literalPrefix(String regex) {
    if (regex.indexOf('|') >= 0) {
      return null;
    }
    StringBuilder out = new StringBuilder();
    for (int i = 0; i < regex.length(); i++) {
      char c = regex.charAt(i);
      boolean plain =
          (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
              || "_-:/=@,;!%&~<>'\"".indexOf(c) >= 0;
      if (!plain || (i + 1 < regex.length() && "?*+{".indexOf(regex.charAt(i + 1)) >= 0)) {
        break;
      }
      out.append(c);
    }
    return out.length() >= 2 ? out.toString() : null;
  }

  private static boolean[] table(String body) {
    boolean[] out = new boolean[128];
    if (body.isEmpty()) {
      return out;
    }
    Matcher m = Pattern.compile("[" + body + "]").matcher("");
    for (char c = 0; c < 128; c++) {
      out[c] = m.reset(String.valueOf(c)).matches();
    }
    return out;
  }

  /** An ASCII letter, digit or {@code _}: a word character of every JDK's {@code \b}. */
  private static boolean word(char c) {
    return c < 128 && (c == '_' || Character.isLetterOrDigit(c));
  }

  /** The branches that may start a match at {@code i} (a bit each). */
  private long candidates(String text, int i, int n) {
    char c = text.charAt(i);
    if (c >= 128) {
      return all;
    }
    long bits = always[c];
    int[] rs = tested[c];
    if (rs == null) {
      return bits;
    }
    char before = i == 0 ? 0 : text.charAt(i - 1);
    char after = i + 1 < n ? text.charAt(i + 1) : 0;
    for (int r : rs) {
      if (i > 0) {
        if (wordStart[r] && word(c) && word(before)) {
          continue;
        }
        if (notAfter[r] != null && before < 128 && notAfter[r][before]) {
          continue;
        }
      }
      if (second[r] != null && (i + 1 >= n || (after < 128 && !second[r][after]))) {
        continue;
      }
      bits |= 1L << r;
    }
    return bits;
  }

  /** The alternation of the branches in {@code bits}, in their order. */
  private Pattern subset(long bits) {
    if (bits == all) {
      return pattern;
    }
    return subsets.computeIfAbsent(
        bits,
        b -> {
          StringBuilder sb = new StringBuilder();
          for (int r = 0; r < branches.length; r++) {
            if ((b >>> r & 1) != 0) {
              sb.append(sb.length() == 0 ? "(?:" : "|(?:").append(branches[r]).append(')');
            }
          }
          return Pattern.compile(sb.toString());
        });
  }

  /**
   * Where {@code Matcher.find()} from the start of {@code text} finds a match, in text order:
   * start and end of each as a pair, {@code [s0, e0, s1, e1, ..., -1]} (the pairs end at the
   * first negative element; the array may be longer); null when there is no match. A scan of
   * one branch that starts with literal text jumps from one occurrence of that text to the
   * next; otherwise, with {@code ascii} (the caller knows every character of the text is
   * ASCII) and one character that can start a branch, from one occurrence of it to the next.
   */
  int[] spans(String text, boolean ascii) {
    int n = text.length();
    int[] out = null;
    int used = 0;
    if (branches == null) {
      Matcher m = pattern.matcher(text);
      while (m.find()) {
        out = grow(out, used);
        out[used++] = m.start();
        out[used++] = m.end();
      }
      return end(out, used);
    }
    // one matcher per branch set met in this text (a text meets few)
    long[] keys = null;
    Matcher[] matchers = null;
    int sets = 0;
    int i = 0;
    int skipTo = ascii ? onlyStart : -1;
    while (i < n) {
      if (prefix != null) {
        i = text.indexOf(prefix, i); // a match starts with it, whatever the text holds
        if (i < 0) {
          break;
        }
      } else if (skipTo >= 0) {
        i = text.indexOf(skipTo, i);
        if (i < 0) {
          break;
        }
      }
      long bits = candidates(text, i, n);
      if (bits == 0) {
        i++;
        continue;
      }
      Matcher m = null;
      for (int j = 0; j < sets; j++) {
        if (keys[j] == bits) {
          m = matchers[j];
          break;
        }
      }
      if (m == null) {
        if (keys == null) {
          keys = new long[4];
          matchers = new Matcher[4];
        } else if (sets == keys.length) {
          keys = java.util.Arrays.copyOf(keys, 2 * sets);
          matchers = java.util.Arrays.copyOf(matchers, 2 * sets);
        }
        m = subset(bits).matcher(text).useTransparentBounds(true).useAnchoringBounds(false);
        keys[sets] = bits;
        matchers[sets++] = m;
      }
      if (!m.region(i, n).lookingAt()) {
        i++;
        continue;
      }
      int last = m.end();
      out = grow(out, used);
      out[used++] = i;
      out[used++] = last;
      i = last > i ? last : i + 1; // after an empty match find() moves on by one
    }
    return end(out, used);
  }

  private static int[] grow(int[] spans, int used) {
    if (spans == null) {
      return new int[8];
    }
    return used + 3 > spans.length ? java.util.Arrays.copyOf(spans, 2 * spans.length) : spans;
  }

  private static int[] end(int[] spans, int used) {
    if (spans != null) {
      spans[used] = -1; // grow() keeps a spare element
    }
    return spans;
  }

  /**
   * {@code text} with every match replaced by {@code token} (taken literally); each matched
   * substring is added to {@code values} when it is not null.
   */
  String mask(String text, String token, List<String> values) {
    int[] spans = spans(text, false);
    if (spans == null) {
      return text;
    }
    StringBuilder out = new StringBuilder(text.length() + 16);
    int last = 0;
    for (int k = 0; spans[k] >= 0; k += 2) {
      out.append(text, last, spans[k]).append(token);
      if (values != null) {
        values.add(text.substring(spans[k], spans[k + 1]));
      }
      last = spans[k + 1];
    }
    return out.append(text, last, text.length()).toString();
  }
}
