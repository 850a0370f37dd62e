/* mgpu-badfiles: writes a corpus of malformed safetensors and GGUF files (and
 * a few valid ones to mutate from) into a folder, with manifest.tsv naming,
 * for each malformed file, a substring its error message must contain. Used
 * as the fuzzers' seed corpus and for checking the readers by hand; the
 * cases themselves live in badfiles.c, shared with test_malformed. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "badfiles.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: mgpu-badfiles [--format safetensors|gguf] [--no-manifest] [--list] OUTDIR\n"
               "Writes small valid files and malformed variants of them into OUTDIR (created\n"
               "if missing), plus OUTDIR/manifest.tsv: one 'file<TAB>expected message\n"
               "substring' line per malformed file. --list prints the cases instead.\n");
}

int main(int argc, char **argv)
{
    const char *dir = NULL;
    int format = 0, manifest = 1, list = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--format") == 0) {
            const char *v = i + 1 < argc ? argv[++i] : "";
            if (strcmp(v, "gguf") == 0)
                format = MGPU_FORMAT_GGUF;
            else if (strcmp(v, "safetensors") == 0)
                format = MGPU_FORMAT_SAFETENSORS;
            else {
                fprintf(stderr, "mgpu-badfiles: --format is safetensors or gguf, not '%s'\n", v);
                return 2;
            }
        } else if (strcmp(a, "--no-manifest") == 0) {
            manifest = 0;
        } else if (strcmp(a, "--list") == 0) {
            list = 1;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (a[0] == '-' || dir) {
            usage(stderr);
            return 2;
        } else {
            dir = a;
        }
    }
    if (!dir && !list) {
        usage(stderr);
        return 2;
    }

    badfile_set set;
    if (badfiles_build(&set) != 0) {
        fprintf(stderr, "mgpu-badfiles: out of memory\n");
        return 1;
    }
    size_t written = 0, malformed = 0;
    for (size_t i = 0; i < set.count; i++) {
        const badfile *f = &set.items[i];
        if (format && (int)f->format != format)
            continue;
        written++;
        malformed += f->status != MGPU_OK;
        if (list)
            printf("%-40s %6zu  %-16s %s\n", f->name, f->size, mgpu_status_name(f->status),
                   f->status == MGPU_OK ? "(valid)" : f->expect);
    }
    int rc = 0;
    if (dir) {
        char error[4200];
        if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
            fprintf(stderr, "mgpu-badfiles: %s: cannot create: %s\n", dir, strerror(errno));
            rc = 1;
        } else if (badfiles_write(&set, dir, format, manifest, error, sizeof error) != 0) {
            fprintf(stderr, "mgpu-badfiles: %s\n", error);
            rc = 1;
        } else if (!list) {
            printf("mgpu-badfiles: wrote %zu files (%zu malformed) to %s\n", written, malformed,
                   dir);
        }
    }
    badfiles_free(&set);
    return rc;
}
