package logcrnn.jvm;

import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * One masking scan: a compiled regex and the characters its matches can start with, shared by
 * {@link Mask} and {@link MaskValues}.
 *
 * <p>{@link #mask} replaces every match of the regex by the token and collects the matched
 * substrings: the result of {@code Matcher.find()} from the start of the text, as Spark's
 * {@code regexp_replace} and {@code regexp_extract_all} scan it. With a start set it asks the
 * regex only at the positions where a match can start: at every other position one table test
 * replaces a match attempt of every alternative. The start set is written by
 * {@code logcrnn.masking.Masker.jvm_scans}: two Java character-class bodies joined by U+0001,
 * the characters any match may start with, and those a match may start with only at a word
 * start (the alternatives behind a leading {@code \b}). Both are conservative: characters
 * outside ASCII are always tried, a word start is only ruled out after an ASCII letter, digit
 * or {@code _} (a word character of every JDK's {@code \b}), a character of the second set
 * that is not a word character is tried everywhere, and at a tried position the regex
 * decides, with transparent and non-anchoring bounds, so its look-behinds, {@code \b} and
 * anchors see the whole text exactly as {@code find()} does. An empty start set tries every
 * position (plain {@code find()}).
 */
final class Scan {
  final String regex;
  final String starts;
  final Pattern pattern;
  /** ASCII characters any match may start with, and those only at a word start; or null. */
  private final boolean[] plain;
  private final boolean[] bounded;

  Scan(String regex, String starts) {
    if (regex == null || starts == null) {
      throw new IllegalArgumentException("logcrnn masking: regex and starts must not be null");
    }
    this.regex = regex;
    this.starts = starts;
    this.pattern = Pattern.compile(regex);
    if (starts.isEmpty() || regex.contains("\\G")) {
      plain = null;
      bounded = null;
    } else {
      String[] parts = starts.split("\u0001", -1);
      if (parts.length != 2) {
        throw new IllegalArgumentException("logcrnn masking: bad start set " + starts);
      }
      plain = table(parts[0]);
      bounded = table(parts[1]);
      for (char c = 0; c < 128; c++) {
        if (bounded[c] && !word(c)) {
          plain[c] = true; // a \b before a non-word character needs a word before it
        }
      }
    }
  }

  /** The cached scan when it is for this regex and start set, else a new one. */
  static Scan of(Scan cached, String regex, String starts) {
    if (cached != null && cached.regex.equals(regex) && cached.starts.equals(starts)) {
      return cached;
    }
    return new Scan(regex, starts);
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

  private boolean candidate(String text, int i) {
    char c = text.charAt(i);
    if (c >= 128 || plain[c]) {
      return true;
    }
    return bounded[c] && (i == 0 || !word(text.charAt(i - 1)));
  }

  /**
   * {@code text} with every match replaced by {@code token} (taken literally); each matched
   * substring is added to {@code values} when it is not null.
   */
  String mask(String text, String token, List<String> values) {
    Matcher m = pattern.matcher(text);
    int n = text.length();
    StringBuilder out = null;
    int last = 0;
    if (plain == null) {
      while (m.find()) {
        if (out == null) {
          out = new StringBuilder(n + 16);
        }
        out.append(text, last, m.start()).append(token);
        if (values != null) {
          values.add(m.group());
        }
        last = m.end();
      }
    } else {
      m.useTransparentBounds(true).useAnchoringBounds(false);
      int i = 0;
      while (i < n) {
        if (!candidate(text, i) || !m.region(i, n).lookingAt()) {
          i++;
          continue;
        }
        if (out == null) {
          out = new StringBuilder(n + 16);
        }
        out.append(text, last, i).append(token);
        if (values != null) {
          values.add(m.group());
        }
        last = m.end();
        i = last > i ? last : i + 1; // after an empty match find() moves on by one
      }
    }
    if (out == null) {
      return text;
    }
    return out.append(text, last, n).toString();
  }
}
