/* The calibration suite (README.md here, "Suite format"), embedded as it is, byte for byte, as
 * ../node-board/stage_blob.S embeds a node's blob: the assembler's .incbin copies the file into a
 * read-only section, so the suite costs no generated source and no compile time however large it
 * is. NMCM_CALIBRATION_SUITE is the file's path as a string literal (CMakeLists.txt here). */
#ifndef NMCM_CALIBRATION_SUITE
#error "NMCM_CALIBRATION_SUITE must name the calibration suite file"
#endif

  .section .rodata.nmcm_calibration_suite, "a", %progbits
  .balign 16 /* the blobs inside start at multiples of 16, so they are 16-byte aligned too */
  .global nmcm_calibration_suite
  .type nmcm_calibration_suite, %object
nmcm_calibration_suite:
  .incbin NMCM_CALIBRATION_SUITE
nmcm_calibration_suite_end:
  .size nmcm_calibration_suite, nmcm_calibration_suite_end - nmcm_calibration_suite

  /* The suite's length as data (the symbol's size is link-time only). */
  .balign 4
  .global nmcm_calibration_suite_size
  .type nmcm_calibration_suite_size, %object
nmcm_calibration_suite_size:
  .word nmcm_calibration_suite_end - nmcm_calibration_suite
  .size nmcm_calibration_suite_size, 4
