/*
 * The exported dynamic symbols of a shared object, read from its ELF .dynsym
 * (64-bit little-endian only; other files are reported as unreadable).
 * Every size and offset is checked against the file size.
 */
#include <elf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conform.h"

long conform_elf_exports(const char *path, char ***names, char *err, size_t cap) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(err, cap, "cannot open %s", path);
    return -1;
  }
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  fseek(f, 0, SEEK_SET);
  if (size < (long)sizeof(Elf64_Ehdr) || size > (1L << 31)) {
    fclose(f);
    snprintf(err, cap, "%s is not an ELF shared object", path);
    return -1;
  }
  unsigned char *img = malloc((size_t)size);
  size_t got = img ? fread(img, 1, (size_t)size, f) : 0;
  fclose(f);
  if (got != (size_t)size) {
    free(img);
    snprintf(err, cap, "cannot read %s", path);
    return -1;
  }
  const Elf64_Ehdr *eh = (const Elf64_Ehdr *)img;
  if (memcmp(eh->e_ident, ELFMAG, SELFMAG) || eh->e_ident[EI_CLASS] != ELFCLASS64 ||
      eh->e_ident[EI_DATA] != ELFDATA2LSB || eh->e_shentsize != sizeof(Elf64_Shdr) ||
      eh->e_shoff > (uint64_t)size || (uint64_t)eh->e_shnum * sizeof(Elf64_Shdr) > (uint64_t)size - eh->e_shoff) {
    free(img);
    snprintf(err, cap, "%s is not a 64-bit little-endian ELF file", path);
    return -1;
  }
  const Elf64_Shdr *sh = (const Elf64_Shdr *)(img + eh->e_shoff);
  long count = 0;
  char **out = NULL;
  for (unsigned s = 0; s < eh->e_shnum; s++) {
    if (sh[s].sh_type != SHT_DYNSYM) continue;
    if (sh[s].sh_link >= eh->e_shnum || sh[s].sh_offset > (uint64_t)size || sh[s].sh_size > (uint64_t)size - sh[s].sh_offset)
      break;
    const Elf64_Shdr *str = &sh[sh[s].sh_link];
    if (str->sh_offset > (uint64_t)size || str->sh_size > (uint64_t)size - str->sh_offset) break;
    const Elf64_Sym *syms = (const Elf64_Sym *)(img + sh[s].sh_offset);
    size_t n = sh[s].sh_size / sizeof(Elf64_Sym);
    const char *strtab = (const char *)(img + str->sh_offset);
    for (size_t i = 1; i < n; i++) {
      unsigned bind = ELF64_ST_BIND(syms[i].st_info), vis = ELF64_ST_VISIBILITY(syms[i].st_other);
      if (syms[i].st_shndx == SHN_UNDEF || (bind != STB_GLOBAL && bind != STB_WEAK) || vis != STV_DEFAULT) continue;
      if (syms[i].st_name >= str->sh_size) continue;
      const char *name = strtab + syms[i].st_name;
      size_t len = strnlen(name, str->sh_size - syms[i].st_name);
      char **grown = realloc(out, (size_t)(count + 1) * sizeof *out);
      if (!grown) break;
      out = grown;
      out[count] = malloc(len + 1);
      memcpy(out[count], name, len);
      out[count][len] = '\0';
      count++;
    }
  }
  free(img);
  *names = out;
  return count;
}
