package logcrnn.jvm;

import org.apache.spark.unsafe.types.UTF8String;

/**
 * What a catalog function built from its constant arguments (a plan, a regex, a zone), found
 * again on the next rows by the arguments' identity: a literal is one object for every row of
 * a task, so after a task's first row no argument is compared byte by byte. A task meeting
 * arguments it has not seen compares their bytes with those already built from and reuses
 * what matches (tasks of one query hold equal literals), else builds anew. The newest
 * {@value #KEEP} argument objects are kept, so a query calling a function with several
 * literals (two session-key regexes) or several tasks running at once do not rebuild on every
 * row.
 */
final class ArgCache<T> {
  /** Builds the value for a pair of arguments (the second may be a constant for one). */
  interface Builder<T> {
    T build(UTF8String a, UTF8String b);
  }

  static final int KEEP = 16;

  private static final class Entry<T> {
    final UTF8String seenA;
    final UTF8String seenB;
    final UTF8String a;
    final UTF8String b;
    final T value;

    Entry(UTF8String a, UTF8String b, T value) {
      this.seenA = a;
      this.seenB = b;
      this.a = a.clone();
      this.b = b.clone();
      this.value = value;
    }
  }

  private final Builder<T> builder;
  private volatile Entry<?>[] entries = new Entry<?>[0];

  ArgCache(Builder<T> builder) {
    this.builder = builder;
  }

  /** The value for non-null {@code a} and {@code b}. */
  @SuppressWarnings("unchecked")
  T get(UTF8String a, UTF8String b) {
    Entry<?>[] known = entries;
    for (Entry<?> e : known) {
      if (e.seenA == a && e.seenB == b) {
        return (T) e.value;
      }
    }
    T value = null;
    for (Entry<?> e : known) {
      if (e.a.equals(a) && e.b.equals(b)) {
        value = (T) e.value;
        break;
      }
    }
    if (value == null) {
      value = builder.build(a, b);
    }
    entries = keepNewest(known, new Entry<>(a, b, value));
    return value;
  }

  /** {@code added}, then the newest of {@code known} (newest first): at most {@value #KEEP}. */
  static <E> E[] keepNewest(E[] known, E added) {
    E[] next = java.util.Arrays.copyOf(known, Math.min(known.length + 1, KEEP));
    System.arraycopy(known, 0, next, 1, next.length - 1);
    next[0] = added;
    return next;
  }
}
