// Compiles base/pch.h once for every target of the tree (CMakeLists.txt: affinage_pch).
