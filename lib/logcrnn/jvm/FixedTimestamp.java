package logcrnn.jvm;

import java.time.LocalDateTime;
import java.time.ZoneId;
import java.time.ZoneOffset;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.unsafe.Platform;
import org.apache.spark.unsafe.types.UTF8String;

/**
 * {@code logcrnn_fn.fixed_timestamp(text, plan, zone) -> timestamp}: a timestamp read from
 * digits at fixed places of {@code text}, as {@code logcrnn.formats.fixed_width_timestamp}
 * reads it with Spark's built-ins ({@code make_timestamp} over integer {@code substring}s), in
 * the time zone {@code zone} (the session's, which {@code make_timestamp} uses).
 *
 * <p>Null when the text is null, holds a character outside ASCII, its length is not the
 * pattern's, a field is not all ASCII digits (the built-ins' cast would also take blanks or a
 * sign there), or the date or time
 * does not exist; a second of 60 with no fraction is the next minute, as in {@code
 * make_timestamp}. Literal characters of the pattern are not checked.
 *
 * <p>{@code plan} is written by {@code logcrnn.formats.fixed_width_timestamp}: the text's
 * length, then one item per field, its pattern letter ({@code yMdHmsS}), its 0-based position
 * and its width, all joined by {@code ;} (for example {@code 13;y0:2;M2:2;d4:2;H7:2;m9:2;s11:2}).
 * A two-digit year is in 2000-2099, Spark's base year for {@code yy}.
 */
public final class FixedTimestamp extends Functions.StringFunction<Long> {
  private static final long serialVersionUID = 1L;
  static final String NAME = "fixed_timestamp";

  public FixedTimestamp() {
    super(NAME, DataTypes.TimestampType, true, "text", "plan", "zone");
  }

  /** A parsed plan and zone. */
  private static final class Plan {
    final int length;
    /** Per letter of "yMdHmsS": position and width, or width 0 when absent. */
    final int[] pos = new int[7];
    final int[] width = new int[7];
    final ZoneId zone;
    final boolean utc;

    Plan(UTF8String planText, UTF8String zoneText) {
      String[] items = planText.toString().split(";", -1);
      try {
        length = Integer.parseInt(items[0]);
        for (int i = 1; i < items.length; i++) {
          int k = "yMdHmsS".indexOf(items[i].charAt(0));
          int colon = items[i].indexOf(':');
          if (k < 0 || colon < 0) {
            throw new IllegalArgumentException(items[i]);
          }
          pos[k] = Integer.parseInt(items[i].substring(1, colon));
          width[k] = Integer.parseInt(items[i].substring(colon + 1));
        }
      } catch (RuntimeException e) {
        throw new IllegalArgumentException(
            "logcrnn_fn.fixed_timestamp: bad plan " + planText + " (" + e.getMessage() + ")");
      }
      if (width[0] == 0 || width[1] == 0 || width[2] == 0 || width[6] > 6) {
        throw new IllegalArgumentException(
            "logcrnn_fn.fixed_timestamp: plan " + planText + " needs y, M and d");
      }
      zone = ZoneId.of(zoneText.toString(), ZoneId.SHORT_IDS);
      utc = zone.normalized().equals(ZoneOffset.UTC);
    }
  }

  private static final ArgCache<Plan> PLANS = new ArgCache<>(Plan::new);

  private static Plan plan(UTF8String text, UTF8String zone) {
    if (text == null || zone == null) {
      throw new IllegalArgumentException(
          "logcrnn_fn.fixed_timestamp: the plan and the zone must not be null");
    }
    return PLANS.get(text, zone);
  }

  /** The number at {@code [pos, pos + width)}, or -1 when a character there is not a digit. */
  private static int digits(Object base, long offset, int pos, int width) {
    int v = 0;
    for (int i = pos; i < pos + width; i++) {
      int d = Platform.getByte(base, offset + i) - '0';
      if (d < 0 || d > 9) {
        return -1;
      }
      v = v * 10 + d;
    }
    return v;
  }

  /** Called by Spark's generated code: microseconds since the epoch, or null. */
  public static Long invoke(UTF8String text, UTF8String planText, UTF8String zoneText) {
    Plan p = plan(planText, zoneText);
    if (text == null || text.numBytes() != p.length || !Utf8Ok.ascii(text)) {
      return null; // a non-ASCII character is not a digit, wherever it is
    }
    Object base = text.getBaseObject();
    long offset = text.getBaseOffset();
    int[] v = new int[7];
    for (int k = 0; k < 7; k++) {
      if (p.width[k] > 0) {
        v[k] = digits(base, offset, p.pos[k], p.width[k]);
        if (v[k] < 0) {
          return null;
        }
      }
    }
    int year = v[0] + (p.width[0] == 2 ? 2000 : 0);
    int month = v[1];
    int day = v[2];
    int hour = v[3];
    int minute = v[4];
    int second = v[5];
    int micros = v[6];
    for (int w = p.width[6]; w < 6; w++) {
      micros *= 10;
    }
    if (month < 1 || month > 12 || day < 1 || day > java.time.YearMonth.of(year, month)
        .lengthOfMonth() || hour > 23 || minute > 59 || second > 60
        || (second == 60 && micros != 0)) {
      return null;
    }
    LocalDateTime time =
        second == 60
            ? LocalDateTime.of(year, month, day, hour, minute, 0).plusMinutes(1)
            : LocalDateTime.of(year, month, day, hour, minute, second);
    long seconds =
        p.utc ? time.toEpochSecond(ZoneOffset.UTC) : time.atZone(p.zone).toEpochSecond();
    return seconds * 1_000_000L + micros;
  }
}
