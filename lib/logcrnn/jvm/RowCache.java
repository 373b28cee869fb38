package logcrnn.jvm;

import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
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

/**
 * A DataFrame kept on the executors as its rows' own bytes: Spark's binary row format
 * ({@code UnsafeRow}) packed into chunks of a few MB, persisted memory-and-disk, read back
 * without decoding. Building it is a copy of each row's bytes, where {@code DataFrame.persist()}
 * builds compressed columns with statistics value by value; reading it gives back the rows
 * as they were. The lineage is kept: a lost chunk is computed again.
 */
public final class RowCache {
  private static final int CHUNK = 4 << 20;

  private final JavaRDD<byte[]> chunks;
  private final Dataset<Row> dataset;

  private RowCache(Dataset<Row> df) {
    StructType schema = df.schema();
    int fields = schema.size();
    RDD<InternalRow> rows = df.queryExecution().toRdd();
    chunks = rows.toJavaRDD().mapPartitions(it -> pack(it, schema), true);
    chunks.persist(StorageLevel.MEMORY_AND_DISK());
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

  private static Iterator<byte[]> pack(Iterator<InternalRow> rows, StructType schema) {
    List<byte[]> out = new ArrayList<>();
    UnsafeProjection project = null;
    byte[] chunk = new byte[CHUNK];
    int pos = 0;
    while (rows.hasNext()) {
      InternalRow row = rows.next();
      UnsafeRow u;
      if (row instanceof UnsafeRow) {
        u = (UnsafeRow) row;
      } else {
        if (project == null) {
          project = UnsafeProjection.create(schema);
        }
        u = project.apply(row);
      }
      int size = u.getSizeInBytes();
      if (pos + 4 + size > chunk.length) {
        if (pos > 0) {
          out.add(java.util.Arrays.copyOf(chunk, pos));
        }
        chunk = new byte[Math.max(CHUNK, 4 + size)];
        pos = 0;
      }
      Platform.putInt(chunk, Platform.BYTE_ARRAY_OFFSET + pos, size);
      u.writeToMemory(chunk, Platform.BYTE_ARRAY_OFFSET + pos + 4);
      pos += 4 + size;
    }
    if (pos > 0) {
      out.add(java.util.Arrays.copyOf(chunk, pos));
    }
    return out.iterator();
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
      while (chunk == null || pos >= chunk.length) {
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
