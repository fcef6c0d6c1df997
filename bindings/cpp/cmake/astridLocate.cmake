# Locates the astrid C library (libastrid + astrid.h) and defines the
# imported target astrid::c. Shared by the build tree (CMakeLists.txt) and
# the installed package (astridConfig.cmake).
#
# Inputs, first found wins:
#   ASTRID_LIB_DIR / ASTRID_INCLUDE_DIR   cache variables (-D...)
#   $ENV{ASTRID_LIB_DIR} / $ENV{ASTRID_INCLUDE_DIR}
#   _astrid_default_lib_dir / _astrid_default_include_dir, set by the includer
# Outputs: ASTRID_LIBRARY, ASTRID_C_INCLUDE_DIR (cache), target astrid::c,
# astrid_c_FOUND (TRUE / FALSE) and astrid_c_NOT_FOUND_MESSAGE.

if(TARGET astrid::c)
  set(astrid_c_FOUND TRUE)
  return()
endif()

set(_astrid_doc_LIB_DIR "Directory holding libastrid.so (or libastrid.a)")
set(_astrid_doc_INCLUDE_DIR "Directory holding astrid.h")
foreach(_astrid_var LIB_DIR INCLUDE_DIR)
  if(NOT ASTRID_${_astrid_var})
    if(NOT "$ENV{ASTRID_${_astrid_var}}" STREQUAL "")
      set(_astrid_value "$ENV{ASTRID_${_astrid_var}}")
    else()
      string(TOLOWER "${_astrid_var}" _astrid_lower)
      set(_astrid_value "${_astrid_default_${_astrid_lower}}")
    endif()
    set(ASTRID_${_astrid_var} "${_astrid_value}" CACHE PATH "${_astrid_doc_${_astrid_var}}" FORCE)
  endif()
endforeach()

# A changed directory invalidates what was found in the previous one.
if(NOT "${ASTRID_LIB_DIR}" STREQUAL "${_ASTRID_LIB_DIR_SEARCHED}")
  unset(ASTRID_LIBRARY CACHE)
endif()
if(NOT "${ASTRID_INCLUDE_DIR}" STREQUAL "${_ASTRID_INCLUDE_DIR_SEARCHED}")
  unset(ASTRID_C_INCLUDE_DIR CACHE)
endif()
set(_ASTRID_LIB_DIR_SEARCHED "${ASTRID_LIB_DIR}" CACHE INTERNAL "")
set(_ASTRID_INCLUDE_DIR_SEARCHED "${ASTRID_INCLUDE_DIR}" CACHE INTERNAL "")

find_library(ASTRID_LIBRARY NAMES astrid PATHS "${ASTRID_LIB_DIR}" NO_DEFAULT_PATH
             DOC "The astrid shared library")
find_path(ASTRID_C_INCLUDE_DIR astrid.h PATHS "${ASTRID_INCLUDE_DIR}" NO_DEFAULT_PATH
          DOC "Directory of astrid.h")

if(NOT ASTRID_LIBRARY OR NOT ASTRID_C_INCLUDE_DIR)
  set(astrid_c_FOUND FALSE)
  set(astrid_c_NOT_FOUND_MESSAGE
      "astrid C library not found: libastrid in ASTRID_LIB_DIR='${ASTRID_LIB_DIR}' -> ${ASTRID_LIBRARY}; "
      "astrid.h in ASTRID_INCLUDE_DIR='${ASTRID_INCLUDE_DIR}' -> ${ASTRID_C_INCLUDE_DIR}. "
      "Build the library (cargo build --release) or point ASTRID_LIB_DIR / ASTRID_INCLUDE_DIR at it.")
  return()
endif()

if(ASTRID_LIBRARY MATCHES "\\.a$")
  add_library(astrid::c STATIC IMPORTED ${_astrid_import_scope})
  # A Rust staticlib needs the system libraries the standard library uses.
  set_property(TARGET astrid::c PROPERTY INTERFACE_LINK_LIBRARIES ${CMAKE_DL_LIBS} m pthread)
else()
  add_library(astrid::c SHARED IMPORTED ${_astrid_import_scope})
  # cargo builds cdylibs without a SONAME: link as -lastrid so that the
  # executable records "libastrid.so" rather than the build-time path.
  set_property(TARGET astrid::c PROPERTY IMPORTED_NO_SONAME TRUE)
endif()
set_target_properties(astrid::c PROPERTIES
  IMPORTED_LOCATION "${ASTRID_LIBRARY}"
  INTERFACE_INCLUDE_DIRECTORIES "${ASTRID_C_INCLUDE_DIR}")
set(astrid_c_FOUND TRUE)
