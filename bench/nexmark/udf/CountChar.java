// Nexmark q14's user-defined function for Flink: count_char(s, c) is the number of
// occurrences of the first character of c in s (0 for a NULL s). Compiled into
// ~/.cache/weir-bench/weir-nexmark-udf.jar by bench/nexmark.sh; Weir has the function
// built in (server/src/functions/count_char.rs).
package weir.nexmark;

import org.apache.flink.table.functions.ScalarFunction;

public class CountChar extends ScalarFunction {
    public long eval(String s, String c) {
        if (s == null || c == null || c.isEmpty()) {
            return 0;
        }
        char ch = c.charAt(0);
        long n = 0;
        for (int i = 0; i < s.length(); i++) {
            if (s.charAt(i) == ch) {
                n++;
            }
        }
        return n;
    }
}
