package logcrnn.jvm;

import java.io.IOException;
import java.util.Base64;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.Path;
import org.apache.parquet.column.statistics.Statistics;
import org.apache.parquet.hadoop.ParquetFileReader;
import org.apache.parquet.hadoop.metadata.BlockMetaData;
import org.apache.parquet.hadoop.metadata.ColumnChunkMetaData;
import org.apache.parquet.hadoop.util.HadoopInputFile;
import org.apache.parquet.schema.LogicalTypeAnnotation;

/**
 * The column statistics of a Parquet file's footer as text, for {@code logcrnn.filestats}:
 * one call from Python per file rather than some ten per column chunk (each call through
 * the Python gateway costs a fraction of a millisecond, the footer itself far less).
 *
 * <p>One line per row group, {@code rows<TAB>count}, each followed by one line per column
 * chunk: {@code path<TAB>physical type<TAB>logical type<TAB>values<TAB>nulls<TAB>least<TAB>
 * greatest}, the path's parts joined by dots, the bounds as Base64 of their plain encoding,
 * {@code -} where the footer has no null count or no bounds.
 */
public final class FooterStats {
  private FooterStats() {}

  public static String read(String uri, Configuration conf) throws IOException {
    StringBuilder out = new StringBuilder();
    Base64.Encoder b64 = Base64.getEncoder();
    try (ParquetFileReader reader =
        ParquetFileReader.open(HadoopInputFile.fromPath(new Path(uri), conf))) {
      for (BlockMetaData block : reader.getFooter().getBlocks()) {
        out.append("rows\t").append(block.getRowCount()).append('\n');
        for (ColumnChunkMetaData chunk : block.getColumns()) {
          Statistics<?> stats = chunk.getStatistics();
          LogicalTypeAnnotation logical = chunk.getPrimitiveType().getLogicalTypeAnnotation();
          boolean bounded = stats != null && stats.hasNonNullValue();
          boolean counted = stats != null && stats.isNumNullsSet();
          out.append(chunk.getPath().toDotString()).append('\t')
              .append(chunk.getPrimitiveType().getPrimitiveTypeName()).append('\t')
              .append(logical == null ? "" : logical.toString()).append('\t')
              .append(chunk.getValueCount()).append('\t')
              .append(counted ? Long.toString(stats.getNumNulls()) : "-").append('\t')
              .append(bounded ? b64.encodeToString(stats.getMinBytes()) : "-").append('\t')
              .append(bounded ? b64.encodeToString(stats.getMaxBytes()) : "-").append('\n');
        }
      }
    }
    return out.toString();
  }
}
