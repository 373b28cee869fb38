package logcrnn.jvm;

import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.unsafe.Platform;
import org.apache.spark.unsafe.types.UTF8String;

/**
 * {@code logcrnn_fn.utf8_ok(text) -> boolean}: whether the bytes of a string Spark's text
 * source read are valid UTF-8. The same answer as {@code encode(decode(cast(text as binary),
 * 'UTF-8'), 'UTF-8') = cast(text as binary)}: Java's decoder replaces exactly the malformed
 * sequences, so the bytes come back unchanged only when there were none. ASCII text, eight
 * bytes at a time, needs no decoding. A null text is true (it has no bytes to be wrong).
 */
public final class Utf8Ok extends Functions.StringFunction<Boolean> {
  private static final long serialVersionUID = 1L;
  static final String NAME = "utf8_ok";

  public Utf8Ok() {
    super(NAME, DataTypes.BooleanType, false, "text");
  }

  /** Called by Spark's generated code. */
  public static boolean invoke(UTF8String text) {
    if (text == null) {
      return true;
    }
    return ascii(text) || strictlyDecodes(text);
  }

  /** True when every byte of {@code text} is below 0x80. */
  static boolean ascii(UTF8String text) {
    Object base = text.getBaseObject();
    long offset = text.getBaseOffset();
    int n = text.numBytes();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
      if ((Platform.getLong(base, offset + i) & 0x8080808080808080L) != 0) {
        return false;
      }
    }
    for (; i < n; i++) {
      if (Platform.getByte(base, offset + i) < 0) {
        return false;
      }
    }
    return true;
  }

  private static boolean strictlyDecodes(UTF8String text) {
    try {
      StandardCharsets.UTF_8
          .newDecoder()
          .onMalformedInput(CodingErrorAction.REPORT)
          .onUnmappableCharacter(CodingErrorAction.REPORT)
          .decode(ByteBuffer.wrap(text.getBytes()));
      return true;
    } catch (CharacterCodingException e) {
      return false;
    }
  }
}
