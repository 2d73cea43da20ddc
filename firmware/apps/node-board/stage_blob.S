/* The node's stage blob (`nmcm export`'s stage.blob, docs/blob-format.md), embedded in flash as
 * it is, byte for byte: the assembler's .incbin copies the file into a read-only section, so the
 * blob costs no generated source and no compile time however large it is, and the image's flash
 * holds exactly the bytes the loader checks (magic, version, sizes, CRC) at start-up.
 *
 * NMCM_STAGE_BLOB is the file's path as a string literal (CMakeLists.txt here). The section name
 * matches the linker scripts' `.rodata.*`, so the blob lands in flash with the constants, and
 * --gc-sections keeps it because main_board.cpp refers to the symbols. */
#ifndef NMCM_STAGE_BLOB
#error "NMCM_STAGE_BLOB must name the stage blob file"
#endif

  .section .rodata.nmcm_stage_blob, "a", %progbits
  .balign 16 /* the weights inside start 16-byte aligned, as in the arena they are copied to */
  .global nmcm_stage_blob
  .type nmcm_stage_blob, %object
nmcm_stage_blob:
  .incbin NMCM_STAGE_BLOB
nmcm_stage_blob_end:
  .size nmcm_stage_blob, nmcm_stage_blob_end - nmcm_stage_blob

  /* The blob's length as data (the symbol's size is link-time only). */
  .balign 4
  .global nmcm_stage_blob_size
  .type nmcm_stage_blob_size, %object
nmcm_stage_blob_size:
  .word nmcm_stage_blob_end - nmcm_stage_blob
  .size nmcm_stage_blob_size, 4
