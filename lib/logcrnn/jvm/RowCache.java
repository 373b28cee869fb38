package logcrnn.jvm;

import java.io.Serializable;
import java.util.Arrays;
import java.util.Iterator;
import java.util.NoSuchElementException;
import org.apache.spark.api.java.JavaRDD;
import org.apache.spark.rdd.RDD;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.catalyst.InternalRow;
import org.apache.spark.sql.catalyst.expressions.UnsafeProjection;
import org.apache.spark.sql.catalyst.expressions.UnsafeRow;
import org.apache.spark.sql.types.StructType;
import org.apache.spark.storage.StorageLevel;
import org.apache.spark.unsafe.Platform;
import scala.Function1;
import scala.collection.JavaConverters;
import scala.reflect.ClassTag;
import scala.reflect.ClassTag$;

/**
 * A DataFrame kept on the executors as its rows' own bytes: Spark's binary row format
 * ({@code UnsafeRow}) packed into chunks of a few MB, read back without decoding. Building it
 * is a copy of each row's bytes, where {@code DataFrame.persist()} builds compressed columns
 * with statistics value by value; reading it gives back the rows as they were. The lineage is
 * kept: a lost chunk is computed again.
 *
 * <p>The chunks are stored serialised ({@code MEMORY_AND_DISK_SER}): by Kryo, which writes an
 * array whole, and compressed when {@code spark.rdd.compress} is on (PySpark turns it on),
 * about an eighth of their size for log lines. Kept as objects, gigabytes of long-lived
 * arrays were copied by the collector again and again while they were built.
 */
public final class RowCache {
  private static final int CHUNK = 4 << 20;
  /** The size word that ends a chunk before its last byte. */
  private static final int END = -1;

  private final JavaRDD<byte[]> chunks;
  private final Dataset<Row> dataset;

  private RowCache(Dataset<Row> df) {
    StructType schema = df.schema();
    int fields = schema.size();
    RDD<InternalRow> rows = df.queryExecution().toRdd();
    // the chunks' RDD carries byte[]'s own ClassTag (JavaRDD.mapPartitions gives Object's), so
    // the block manager serialises them with Kryo, which copies an array whole, and not with
    // Java serialisation, which copies it 1 KB at a time
    Function1<scala.collection.Iterator<InternalRow>, scala.collection.Iterator<byte[]>> pack =
        (Function1<scala.collection.Iterator<InternalRow>, scala.collection.Iterator<byte[]>>
                & Serializable)
            it -> JavaConverters.asScalaIterator(new Pack(JavaConverters.asJavaIterator(it), schema));
    ClassTag<byte[]> bytes = ClassTag$.MODULE$.apply(byte[].class);
    chunks = new JavaRDD<>(rows.mapPartitions(pack, true, bytes), bytes);
    chunks.persist(StorageLevel.MEMORY_AND_DISK_SER());
    JavaRDD<InternalRow> back = chunks.mapPartitions(it -> new Unpack(it, fields), true);
    SparkSession spark = df.sparkSession();
    dataset = spark.internalCreateDataFrame(back.rdd(), schema, false);
  }

  /** A cache of {@code df}'s rows (computed by the first action that reads them). */
  public static RowCache of(Dataset<Row> df) {
    return new RowCache(df);
  }

  /** The cached rows, as a DataFrame of the same schema. */
  public Dataset<Row> dataset() {
    return dataset;
  }

  /** Drops the cached chunks. */
  public void unpersist() {
    chunks.unpersist(false);
  }

  /**
   * Rows packed into chunks, one chunk at a time: each row is its size (an int) then its bytes;
   * a chunk ends at a size of {@link #END}, or where fewer than 4 bytes are left. A chunk is handed on as soon as
   * it is full, so a partition is never held whole on the heap.
   */
  private static final class Pack implements Iterator<byte[]> {
    private final Iterator<InternalRow> rows;
    private final StructType schema;
    private UnsafeProjection project;
    private UnsafeRow pending;

    Pack(Iterator<InternalRow> rows, StructType schema) {
      this.rows = rows;
      this.schema = schema;
    }

    @Override
    public boolean hasNext() {
      return pending != null || rows.hasNext();
    }

    @Override
    public byte[] next() {
      if (!hasNext()) {
        throw new NoSuchElementException();
      }
      UnsafeRow first = pending != null ? pending : unsafe(rows.next());
      pending = null;
      byte[] chunk = new byte[Math.max(CHUNK, 4 + first.getSizeInBytes())];
      int pos = put(chunk, 0, first);
      while (rows.hasNext()) {
        UnsafeRow u = unsafe(rows.next());
        if (pos + 4 + u.getSizeInBytes() > chunk.length) {
          // the row stays for the next chunk; its bytes are the source's, copied now
          pending = u.copy();
          break;
        }
        pos = put(chunk, pos, u);
      }
      if (pending == null && pos < chunk.length / 2) {
        return Arrays.copyOf(chunk, pos); // the partition's last chunk, and a small one
      }
      if (pos + 4 <= chunk.length) {
        Platform.putInt(chunk, Platform.BYTE_ARRAY_OFFSET + pos, END);
      }
      return chunk;
    }

    private UnsafeRow unsafe(InternalRow row) {
      if (row instanceof UnsafeRow) {
        return (UnsafeRow) row;
      }
      if (project == null) {
        project = UnsafeProjection.create(schema);
      }
      return project.apply(row);
    }

    private static int put(byte[] chunk, int pos, UnsafeRow row) {
      int size = row.getSizeInBytes();
      Platform.putInt(chunk, Platform.BYTE_ARRAY_OFFSET + pos, size);
      row.writeToMemory(chunk, Platform.BYTE_ARRAY_OFFSET + pos + 4);
      return pos + 4 + size;
    }
  }

  /** The rows of packed chunks; one row object, pointed at each row's bytes in turn. */
  private static final class Unpack implements Iterator<InternalRow> {
    private final Iterator<byte[]> chunks;
    private final UnsafeRow row;
    private byte[] chunk;
    private int pos;

    Unpack(Iterator<byte[]> chunks, int fields) {
      this.chunks = chunks;
      this.row = new UnsafeRow(fields);
    }

    @Override
    public boolean hasNext() {
      while (chunk == null
          || pos + 4 > chunk.length
          || Platform.getInt(chunk, Platform.BYTE_ARRAY_OFFSET + pos) == END) {
        if (!chunks.hasNext()) {
          return false;
        }
        chunk = chunks.next();
        pos = 0;
      }
      return true;
    }

    @Override
    public InternalRow next() {
      if (!hasNext()) {
        throw new NoSuchElementException();
      }
      int size = Platform.getInt(chunk, Platform.BYTE_ARRAY_OFFSET + pos);
      row.pointTo(chunk, Platform.BYTE_ARRAY_OFFSET + pos + 4, size);
      pos += 4 + size;
      return row;
    }
  }
}
