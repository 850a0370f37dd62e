/* The allocation-language parser: every form of ALLOCATION.md, the bugs of
 * the original that must not come back, and errors that point at the
 * offending token. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "mgpu/plan.h"

static mgpu_alloc parse_ok(const char *text)
{
    mgpu_alloc a;
    mgpu_error err = {0};
    if (mgpu_alloc_parse(text, &a, &err) != MGPU_OK)
        fail_msg("'%s': %s", text, err.message);
    return a;
}

static void expect_error(const char *text, const char *needle)
{
    mgpu_alloc a;
    mgpu_error err = {0};
    assert_int_equal(mgpu_alloc_parse(text, &a, &err), MGPU_ERR_ARGUMENT);
    if (!strstr(err.message, needle))
        fail_msg("'%s': message '%s' lacks '%s'", text, err.message, needle);
    /* every message quotes the string */
    assert_non_null(strstr(err.message, text));
}

static void test_normal_mode(void **state)
{
    (void)state;
    mgpu_alloc a = parse_ok("#cuda:0;4.0;cpu");
    assert_true(a.normal);
    assert_string_equal(a.compute, "cuda:0");
    assert_int_equal(a.virtual_vram_bytes, UINT64_C(4) << 30);
    assert_int_equal(a.donor_count, 1);
    assert_string_equal(a.donors[0], "cpu");
    a = parse_ok(" # cuda:0 ; 6 ; cuda:1 , cpu ");
    assert_int_equal(a.donor_count, 2);
    assert_string_equal(a.donors[0], "cuda:1"); /* written order kept */
    assert_string_equal(a.donors[1], "cpu");
    a = parse_ok("#cuda:1");
    assert_false(a.normal);
    assert_string_equal(a.compute, "cuda:1");
    a = parse_ok("#cuda:0;512mb;cpu");
    assert_int_equal(a.virtual_vram_bytes, UINT64_C(512) << 20);
}

static void test_expert_modes(void **state)
{
    (void)state;
    mgpu_alloc a = parse_ok("cuda:0,2.5gb;cpu,*");
    assert_int_equal(a.mode, MGPU_QUOTA_BYTES);
    assert_int_equal(a.entry_count, 2);
    assert_true(a.entries[0].value == 2.5 * 1073741824.0);
    assert_true(a.entries[1].wildcard);
    assert_int_equal(a.entries[1].kind, MGPU_QUOTA_NONE);
    a = parse_ok("cuda:0,500mb;cuda:1,3.0g;cpu,5gb*");
    assert_true(a.entries[0].value == 500.0 * 1048576.0);
    assert_true(a.entries[1].value == 3.0 * 1073741824.0);
    assert_true(a.entries[2].wildcard);
    assert_int_equal(a.entries[2].kind, MGPU_QUOTA_BYTES);
    assert_true(a.entries[2].value == 5.0 * 1073741824.0);
    a = parse_ok("cuda:0,25%;cpu,75%");
    assert_int_equal(a.mode, MGPU_QUOTA_RATIO);
    assert_true(a.entries[1].value == 75.0);
    a = parse_ok("cuda:0,0.95;cuda:1,0.95;cpu,0.50");
    assert_int_equal(a.mode, MGPU_QUOTA_FRACTION);
    assert_int_equal(a.entry_count, 3);
    /* every unit, any case, blanks anywhere */
    a = parse_ok(" cuda:0 , 1 K ; cuda:1,2KiB;cpu,3 B;disk,1Tb ; ");
    assert_true(a.entries[0].value == 1024.0);
    assert_true(a.entries[1].value == 2048.0);
    assert_true(a.entries[2].value == 3.0);
    assert_true(a.entries[3].value == 1099511627776.0);
    a = parse_ok("cuda:0,2.5gb;cpu,*#cuda:1");
    assert_string_equal(a.compute, "cuda:1");
    assert_int_equal(a.entry_count, 2);
    a = parse_ok("");
    assert_int_equal(a.entry_count, 0);
    assert_false(a.normal);
    a = parse_ok("CUDA:0,1gb;CPU,*");
    assert_string_equal(a.entries[0].device, "cuda:0");
}

/* The original's bugs, as regressions. */
static void test_original_bugs(void **state)
{
    (void)state;
    /* Mode comes from each value, not from letters anywhere in the string:
     * a device named mps or mlu must not switch to bytes mode. */
    mgpu_alloc a = parse_ok("cuda:0,0.5;mps,0.5");
    assert_int_equal(a.mode, MGPU_QUOTA_FRACTION);
    a = parse_ok("mlu:0,25%;cpu,75%");
    assert_int_equal(a.mode, MGPU_QUOTA_RATIO);
    /* '*' works in ratio and fraction modes (the original crashes) */
    a = parse_ok("cuda:0,25%;cpu,*");
    assert_int_equal(a.mode, MGPU_QUOTA_RATIO);
    assert_true(a.entries[1].wildcard);
    a = parse_ok("cuda:0,0.1;cpu,*");
    assert_int_equal(a.mode, MGPU_QUOTA_FRACTION);
    a = parse_ok("cuda:0,10%;cpu,20%*");
    assert_true(a.entries[1].wildcard && a.entries[1].kind == MGPU_QUOTA_RATIO);
    /* device order is the written order, never sorted by name */
    a = parse_ok("cuda:10,1gb;cuda:2,1gb;cpu,*");
    assert_string_equal(a.entries[0].device, "cuda:10");
    assert_string_equal(a.entries[1].device, "cuda:2");
}

static void test_errors(void **state)
{
    (void)state;
    /* the example: the unit starts at column 10 (counted from 0) */
    expect_error("cuda:0,2.5gx;cpu,*", "unknown unit 'gx'");
    expect_error("cuda:0,2.5gx;cpu,*", "at column 10");
    expect_error("cuda:0,2.5gb;cpu,50%", "mixes bytes ('cuda:0') and ratio ('cpu')");
    expect_error("cuda:0,0.5;cpu,2gb", "mixes fraction");
    expect_error("cuda:0,1.5;cpu,*", "fraction 1.5 is more than 1");
    expect_error("cuda:0,abc;cpu,*", "expected a size");
    expect_error("cuda:0,-1gb;cpu,*", "expected a size");
    expect_error("cuda:0;cpu,*", "expected DEVICE,VALUE");
    expect_error("cuda:0,;cpu,*", "missing value");
    expect_error(",1gb", "missing device name");
    expect_error("cuda:0,1gb;cuda:0,2gb", "device 'cuda:0' appears twice");
    expect_error("cuda:0,*;cpu,*", "two '*' entries");
    expect_error("#cuda:0;4.0", "expected '#COMPUTE;GB;DONORS'");
    expect_error("#cuda:0;x;cpu", "expected the GiB to move");
    expect_error("#cuda:0;4xb;cpu", "unknown unit 'xb'");
    expect_error("#cuda:0;4;cuda:0", "cannot be its own donor");
    expect_error("#cuda:0;4;cpu,cpu", "donor 'cpu' appears twice");
    expect_error("#cuda:0;4;", "missing donor");
    expect_error("#cuda:0;4;cpu;x", "too many ';'");
    expect_error("cuda:0,1gb#cuda:0;4;cpu", "not both");
    expect_error("#cuda:0#cuda:1", "more than one '#'");
    expect_error("cu da:0,1gb", "unexpected character ' '");
    expect_error("cuda:0,99999999999999999999tb", "too large");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_normal_mode),
        cmocka_unit_test(test_expert_modes),
        cmocka_unit_test(test_original_bugs),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
